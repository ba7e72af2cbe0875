"""The identity read from a resident ID card, and the ID number rules (GB 11643, ISO 7064 MOD 11-2).

The rules themselves live in :mod:`device.protocol` (they define the key format of the
``residents`` document, which the server validates too); they are re-exported here.

An :class:`Identity` never hides a doubtful ID number: it reports the problems (check digit, birth
date, gender) in ``id_number_problems`` instead of raising, so the caller decides. Its ``repr``
masks the personal data, so an accidental log line leaks nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from device.privacy import mask_id_number, mask_name
from device.protocol import id_check_digit, id_number_problems, parse_yyyymmdd

__all__ = [
    "LONG_TERM",
    "Identity",
    "id_check_digit",
    "id_number_problems",
    "parse_yyyymmdd",
]

LONG_TERM = "长期"
"""``valid_to`` printed on a card that does not expire (``Identity.valid_to is None``)."""


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
