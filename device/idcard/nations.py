"""Code tables of the ID-card text block: gender (GB/T 2261.1) and nation (GB 3304), both ways."""

from __future__ import annotations

GENDERS: dict[str, str] = {"0": "未知", "1": "男", "2": "女", "9": "未说明"}
"""Gender code on the card -> name."""

# GB 3304 order, codes 01..56 (space separated to keep the table readable).
_GB3304 = (
    "汉 蒙古 回 藏 维吾尔 苗 彝 壮 布依 朝鲜 满 侗 瑶 白 土家 哈尼 哈萨克 傣 黎 "
    "傈僳 佤 畲 高山 拉祜 水 东乡 纳西 景颇 柯尔克孜 土 达斡尔 仫佬 羌 布朗 "
    "撒拉 毛南 仡佬 锡伯 阿昌 普米 塔吉克 怒 乌孜别克 俄罗斯 鄂温克 德昂 "
    "保安 裕固 京 塔塔尔 独龙 鄂伦春 赫哲 门巴 珞巴 基诺"
)
_NATION_NAMES = _GB3304.split()

NATIONS: dict[str, str] = {f"{i:02d}": name for i, name in enumerate(_NATION_NAMES, start=1)}
"""Nation code on the card (two digits) -> name, GB 3304 order: 01 汉 ... 56 基诺, then 97, 98."""
NATIONS["97"] = "其他"
NATIONS["98"] = "外国血统中国籍人士"

_GENDER_CODES = {name: code for code, name in GENDERS.items()}
_NATION_CODES = {name: code for code, name in NATIONS.items()}


def gender_name(code: str) -> str:
    """The name of a gender code; an unknown code is returned unchanged so nothing is lost."""
    return GENDERS.get(code, code)


def nation_name(code: str) -> str:
    """The name of a nation code; an unknown code is returned unchanged so nothing is lost."""
    return NATIONS.get(code, code)


def gender_code(name: str) -> str:
    """Inverse of :func:`gender_name` (a raw code passes through)."""
    return _GENDER_CODES.get(name, name)


def nation_code(name: str) -> str:
    """Inverse of :func:`nation_name` (a raw code passes through)."""
    return _NATION_CODES.get(name, name)
