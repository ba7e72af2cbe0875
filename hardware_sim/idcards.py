"""Card data for the simulator: realistic, synthetic resident identities with valid ID numbers.

:func:`sample_card` is deterministic (the same ``i`` always gives the same card), so transcripts of
simulated sessions can be golden files. Every person here is invented.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random

from device.idcard.codec import PHOTO_SIZE
from device.idcard.identity import Identity, id_check_digit

# (region code, address prefix, issuing authority)
_REGIONS = (
    ("110105", "北京市朝阳区", "北京市公安局朝阳分局"),
    ("310115", "上海市浦东新区", "上海市公安局浦东分局"),
    ("440305", "广东省深圳市南山区", "深圳市公安局南山分局"),
    ("330106", "浙江省杭州市西湖区", "杭州市公安局西湖区分局"),
    ("510107", "四川省成都市武侯区", "成都市公安局武侯区分局"),
    ("420106", "湖北省武汉市武昌区", "武汉市公安局武昌区分局"),
)
_STREETS = ("幸福路", "和平街", "建设大道", "人民路", "文化巷", "长江路", "光明街", "团结路")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚桂兰"
_NATIONS = ("汉",) * 8 + ("回", "满", "壮", "蒙古", "维吾尔", "朝鲜")


def make_id_number(region: str, birth: dt.date, sequence: int, male: bool) -> str:
    """A valid ID number: region, birth date, 3-digit sequence (odd = male), check character."""
    seq = sequence % 1000
    if (seq % 2 == 1) != male:
        seq = (seq + 1) % 1000
    first17 = f"{region}{birth:%Y%m%d}{seq:03d}"
    return first17 + id_check_digit(first17)


def validity(birth: dt.date, issued: dt.date) -> dt.date | None:
    """Expiry by age at issue: under 16 5 years, 16-25 10, 26-45 20, older long-term (None)."""
    age = issued.year - birth.year - ((issued.month, issued.day) < (birth.month, birth.day))
    years = 5 if age < 16 else 10 if age <= 25 else 20 if age <= 45 else None
    if years is None:
        return None
    try:
        return issued.replace(year=issued.year + years)
    except ValueError:  # 29 February
        return issued.replace(year=issued.year + years, day=28)


def photo_bytes(seed: int, size: int = PHOTO_SIZE) -> bytes:
    """Deterministic stand-in for the WLT photo (opaque bytes; real ones start with ``WLfx``)."""
    out = bytearray(b"WLfx")
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"linli-photo-{seed}-{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def sample_card(i: int = 0, fingerprint: bool = False) -> Identity:
    """The ``i``-th sample resident (deterministic); ``fingerprint`` adds 1024 bytes of minutiae."""
    rng = random.Random(20261123 + i)  # noqa: S311 -- test data, reproducible on purpose
    region, place, issuer = _REGIONS[i % len(_REGIONS)]
    male = rng.random() < 0.5
    birth = dt.date(1940, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 66))
    issued = max(birth + dt.timedelta(days=365 * 16 + 30), dt.date(2008, 3, 1)) + dt.timedelta(
        days=rng.randrange(0, 365 * 3)
    )
    name = rng.choice(_SURNAMES) + "".join(rng.choice(_GIVEN) for _ in range(rng.choice((1, 2))))
    address = (
        f"{place}{rng.choice(_STREETS)}{rng.randrange(1, 300)}号"
        f"{rng.randrange(1, 30)}栋{rng.randrange(1, 6)}单元{rng.randrange(101, 2800)}室"
    )
    return Identity(
        name=name,
        gender="男" if male else "女",
        nation=rng.choice(_NATIONS),
        birth=birth,
        address=address,
        id_number=make_id_number(region, birth, rng.randrange(0, 1000), male),
        issuer=issuer,
        valid_from=issued,
        valid_to=validity(birth, issued),
        photo=photo_bytes(i),
        fingerprint=photo_bytes(10_000 + i) if fingerprint else None,
    )
