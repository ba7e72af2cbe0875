"""Finding and registering the CJK TrueType font certificates are set in (HARDWARE.md section 4).

``certificate.font`` in the config wins; otherwise fontconfig is asked for a font covering
Simplified Chinese, WenQuanYi Micro Hei (Debian ``fonts-wqy-microhei``) first. reportlab embeds
only TrueType outlines, so CFF-based ``.otf`` files (e.g. Noto CJK) are skipped.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import threading
from pathlib import Path

from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFError, TTFont

from device.errors import LinliError

log = logging.getLogger(__name__)

PREFERRED = "WenQuanYi Micro Hei:lang=zh-cn"
INSTALL_HINT = "install one (Debian: apt install fonts-wqy-microhei) or set certificate.font"
_TRUETYPE = (".ttf", ".ttc")

_lock = threading.Lock()
_registered: dict[str, str] = {}


class FontNotFoundError(LinliError, FileNotFoundError):
    """No usable CJK TrueType font: certificates cannot be rendered."""


def _fontconfig(*args: str) -> list[str]:
    exe = shutil.which(args[0])
    if exe is None:
        raise FontNotFoundError(f"{args[0]} (fontconfig) is not installed; {INSTALL_HINT}")
    try:
        out = subprocess.run(  # noqa: S603 -- fixed arguments, no shell
            [exe, *args[1:]], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as err:
        raise FontNotFoundError(f"{args[0]} failed ({err}); {INSTALL_HINT}") from err
    return [line.strip() for line in out.splitlines() if line.strip()]


def find_cjk_font(override: str = "") -> Path:
    """The font file to use: ``override`` if given (must exist), else fontconfig's best CJK font."""
    if override:
        path = Path(override)
        if not path.is_file():
            raise FontNotFoundError(f"certificate.font = {override!r}: no such font file")
        return path
    # Asking fontconfig costs two processes (~25 ms): once per process and fontconfig setup.
    env = (os.environ.get("FONTCONFIG_FILE"), os.environ.get("FONTCONFIG_PATH"))
    return _ask_fontconfig(env)


@functools.lru_cache(maxsize=4)
def _ask_fontconfig(env: tuple[str | None, str | None]) -> Path:
    del env  # only the cache key: the subprocesses read it from the environment
    # fc-match always answers with *some* font; only one that covers zh-cn will do.
    covering = set(_fontconfig("fc-list", "-f", "%{file}\n", ":lang=zh-cn"))
    usable = sorted(f for f in covering if f.lower().endswith(_TRUETYPE))
    if not usable:
        raise FontNotFoundError(
            f"no Chinese TrueType font found through fontconfig; {INSTALL_HINT}"
        )
    best = _fontconfig("fc-match", "-f", "%{file}\n", PREFERRED)
    chosen = best[0] if best and best[0] in usable else usable[0]
    return Path(chosen)


def register_font(path: Path) -> str:
    """Register ``path`` with reportlab once per process and return its font name."""
    key = str(path.resolve())
    with _lock:
        name = _registered.get(key)
        if name is not None:
            return name
        name = f"LinliCJK{len(_registered)}"
        try:
            # subfontIndex picks the first face of a .ttc collection; ignored for a .ttf.
            font = TTFont(name, key, subfontIndex=0)
        except (TTFError, OSError, ValueError) as err:
            raise FontNotFoundError(f"{path}: not a usable TrueType font ({err})") from err
        pdfmetrics.registerFont(font)
        _registered[key] = name
        log.info("certificate font %s registered from %s", name, key)
        return name
