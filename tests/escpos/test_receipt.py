"""Receipt bytes: golden bytes written by hand from HARDWARE.md section 3, not from the code."""

from __future__ import annotations

import pytest

from device.escpos.receipt import Receipt, build_receipt

INIT = b"\x1b@"
# python-escpos set(double_width, double_height): ESC ! 0 (normal), then ESC ! 0 + ESC ! 0x30.
DOUBLE = b"\x1b!\x00" + b"\x1b!\x00\x1b!\x30"
NORMAL = b"\x1b!\x00" + b"\x1b!\x00\x1b!\x00"
BOLD_ON, BOLD_OFF = b"\x1bE\x01", b"\x1bE\x00"
CENTER, LEFT = b"\x1ba\x01", b"\x1ba\x00"
CN_ON, CN_OFF = b"\x1c&", b"\x1c."
QR = (
    b"\x1d(k\x04\x00\x31\x41\x32\x00"  # model 2
    b"\x1d(k\x03\x00\x31\x43\x06"  # module 6 dots
    b"\x1d(k\x03\x00\x31\x45\x31"  # error correction M
    b"\x1d(k\x07\x00\x31\x50\x30LQ:1"  # store: pL = 4 + 3
    b"\x1d(k\x03\x00\x31\x51\x30"  # print
)
CUT = b"\x1bd\x06" + b"\x1dV\x00"


def test_golden_receipt() -> None:
    receipt = Receipt(title="回执", lines=["No. A1", "姓名: 张*"], qr="LQ:1", footer="谢谢")
    expected = (
        INIT
        + DOUBLE + BOLD_ON + CENTER
        + CN_ON + b"\x1c!\x0c" + bytes.fromhex("bbd8d6b4") + b"\x1c!\x00" + CN_OFF + b"\n"
        + NORMAL + BOLD_OFF + LEFT
        + b"\x1bt\x00" + b"No. A1\n"
        + CN_ON + bytes.fromhex("d0d5c3fb") + b": " + bytes.fromhex("d5c5") + b"*" + CN_OFF + b"\n"
        + CENTER + QR + b"\n"
        + CENTER + CN_ON + bytes.fromhex("d0bbd0bb") + CN_OFF + b"\n"
        + CUT
    )  # fmt: skip
    assert build_receipt(receipt) == expected


def test_chinese_never_goes_through_the_python_escpos_encoder() -> None:
    data = build_receipt(Receipt(title="居住证明", lines=["地址：幸福路 8 号"]))
    assert "地址：幸福路 8 号".encode("gb18030") in data
    assert "居住证明".encode("gb18030") in data
    assert b"?" not in data  # the encoder's replacement for characters it cannot map


def test_receipt_without_qr_or_footer_still_ends_with_a_cut() -> None:
    data = build_receipt(Receipt(title="OK"))
    assert data.startswith(INIT) and data.endswith(CUT)
    assert b"\x1d(k" not in data


def test_bad_qr_module_size_is_refused() -> None:
    with pytest.raises(ValueError, match="qr_module"):
        build_receipt(Receipt(title="x", qr="y", qr_module=17))
