"""The identity read from a resident ID card, and the ID number rules (GB 11643, ISO 7064 MOD 11-2).

An :class:`Identity` never hides a doubtful ID number: it reports the problems (check digit, birth
date, gender) in ``id_number_problems`` instead of raising, so the caller decides. Its ``repr``
masks the personal data, so an accidental log line leaks nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from device.privacy import mask_id_number, mask_name

LONG_TERM = "长期"
"""``valid_to`` printed on a card that does not expire (``Identity.valid_to is None``)."""

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_DIGITS = frozenset("0123456789")


def id_check_digit(first17: str) -> str:
    """The check character of an ID number from its first 17 digits (ISO 7064 MOD 11-2)."""
    if len(first17) != 17 or not set(first17) <= _DIGITS:
        raise ValueError("an ID number check digit needs exactly 17 ASCII digits")
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def parse_yyyymmdd(text: str) -> dt.date | None:
    """``19491231`` -> date; None when ``text`` is not 8 ASCII digits forming a real date."""
    if len(text) != 8 or not set(text) <= _DIGITS:
        return None
    try:
        return dt.date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None


def id_number_problems(
    id_number: str, birth: dt.date | None = None, gender: str | None = None
) -> list[str]:
    """What is wrong with ``id_number``, alone and against the card's birth date and gender.

    An empty list means valid. The messages never repeat the number itself (they may be logged).
    ``gender`` is the name on the card (男/女); other values are not compared.
    """
    if len(id_number) != 18:
        return [f"ID number has {len(id_number)} characters, expected 18"]
    body, check = id_number[:17], id_number[17]
    if not set(body) <= _DIGITS or check not in _DIGITS | {"X"}:
        return ["ID number must be 17 digits followed by a digit or X"]
    problems: list[str] = []
    expected = id_check_digit(body)
    if check != expected:
        problems.append(f"check digit is {check}, expected {expected}")
    embedded = parse_yyyymmdd(body[6:14])
    if embedded is None:
        problems.append("digits 7-14 are not a valid date")
    elif birth is not None and embedded != birth:
        problems.append("digits 7-14 do not match the birth date on the card")
    odd = int(body[16]) % 2 == 1
    if (gender == "男" and not odd) or (gender == "女" and odd):
        problems.append(f"17th digit is {'odd' if odd else 'even'} but the card says {gender}")
    return problems


@dataclass(frozen=True, repr=False)
class Identity:
    """The text and photo of one ID card.

    ``gender`` and ``nation`` are names (男, 汉); a code outside the tables is kept as the raw code.
    ``valid_to`` is None for a card valid for the long term (长期, see :attr:`long_term`).
    ``photo`` is the 1024-byte WLT image, opaque (only the vendor library decodes it).
    """

    name: str
    gender: str
    nation: str
    birth: dt.date
    address: str
    id_number: str
    issuer: str
    valid_from: dt.date
    valid_to: dt.date | None
    photo: bytes = b""
    fingerprint: bytes | None = None
    id_number_problems: tuple[str, ...] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        problems = id_number_problems(self.id_number, self.birth, self.gender)
        object.__setattr__(self, "id_number_problems", tuple(problems))

    @property
    def id_number_valid(self) -> bool:
        """True when the check digit, the birth date and the gender digit all agree."""
        return not self.id_number_problems

    @property
    def long_term(self) -> bool:
        """True for a card valid for the long term (长期)."""
        return self.valid_to is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict; the photo is given as its byte length, ``valid_to`` may be "长期"."""
        return {
            "name": self.name,
            "gender": self.gender,
            "nation": self.nation,
            "birth": self.birth.isoformat(),
            "address": self.address,
            "id_number": self.id_number,
            "issuer": self.issuer,
            "valid_from": self.valid_from.isoformat(),
            "valid_to": LONG_TERM if self.valid_to is None else self.valid_to.isoformat(),
            "photo_bytes": len(self.photo),
            "id_number_valid": self.id_number_valid,
            "id_number_problems": list(self.id_number_problems),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Identity:
        """The inverse of :meth:`to_json` (the photo, given there as a length only, becomes b"").

        Raises ValueError naming the first missing or malformed key (never its value).
        """
        if not isinstance(data, dict):
            raise ValueError("identity JSON must be an object")

        def text(key: str) -> str:
            value = data.get(key)
            if not isinstance(value, str):
                raise ValueError(f"identity JSON: {key!r} must be a string")
            return value

        def date(key: str) -> dt.date:
            try:
                return dt.date.fromisoformat(text(key))
            except ValueError:
                raise ValueError(f"identity JSON: {key!r} must be a date like 1949-12-31") from None

        return cls(
            name=text("name"),
            gender=text("gender"),
            nation=text("nation"),
            birth=date("birth"),
            address=text("address"),
            id_number=text("id_number"),
            issuer=text("issuer"),
            valid_from=date("valid_from"),
            valid_to=None if data.get("valid_to") == LONG_TERM else date("valid_to"),
        )

    def masked(self) -> str:
        """A description safe for a log line: masked name and ID number, nothing else personal."""
        return f"{mask_name(self.name)} {mask_id_number(self.id_number)}"

    def __repr__(self) -> str:
        return (
            f"Identity(name={mask_name(self.name)!r}, "
            f"id_number={mask_id_number(self.id_number)!r}, "
            f"id_number_valid={self.id_number_valid}, photo_bytes={len(self.photo)})"
        )

    __str__ = __repr__
