"""Errors of the receipt printer a kiosk can show: each says what is wrong in Chinese and English.

A fault the resident or staff can fix (paper, cover) has its own class so the UI can show the
right picture; :class:`PaperNearEndWarning` is not an error: the receipt prints, the kiosk
only reports it.
"""

from __future__ import annotations

from device.errors import DeviceError, DeviceUnavailableError, ProtocolError


class PrinterError(DeviceError):
    """The receipt printer cannot print now; the receipt stays in the spool."""

    zh = "小票打印机故障"
    en = "receipt printer error"

    def __init__(self, detail: str = "") -> None:
        self.detail = detail
        message = f"{self.zh} / {self.en}"
        super().__init__(f"{message}: {detail}" if detail else message)


class PaperOutError(PrinterError):
    zh = "小票打印机缺纸，请联系工作人员更换纸卷"
    en = "receipt printer is out of paper: ask staff to load a new roll"


class CoverOpenError(PrinterError):
    zh = "小票打印机上盖未关好，请关紧上盖"
    en = "receipt printer cover is open: close the cover"


class PrinterOfflineError(PrinterError):
    zh = "小票打印机离线或出错，请联系工作人员"
    en = "receipt printer is offline or reports an error: call staff"


class PrinterUnavailableError(PrinterError, DeviceUnavailableError):
    zh = "无法连接小票打印机，请检查电源和连线"
    en = "receipt printer not reachable: check its power and cable"


class EscposStreamError(ProtocolError):
    """A byte stream is not valid ESC/POS (unknown command, truncated command, absurd size)."""


class PaperNearEndWarning(UserWarning):
    """The paper roll is nearly used up: this receipt prints, the next roll should be ready."""

    zh = "小票纸即将用完"
    en = "receipt paper is nearly used up"

    def __init__(self) -> None:
        super().__init__(f"{self.zh} / {self.en}")
