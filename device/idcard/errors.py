"""Typed errors of the ID-card reader: damaged frames, and the SAM's SW3 status codes and meanings.

Every SW3 failure code of HARDWARE.md section 1 maps to a class (several codes may share one); a
code outside the table is :class:`UnknownStatusError`. :func:`status_error` builds the right one.
"""

from __future__ import annotations

from typing import Literal

from device.errors import DeviceError, ProtocolError

SW3_OK = 0x90
SW3_FIND_OK = 0x9F

SW3_MEANINGS: dict[int, str] = {
    0x90: "success",
    0x9F: "card found",
    0x91: "no content",
    0x10: "checksum error (seen by the SAM)",
    0x11: "length error or timeout (seen by the SAM)",
    0x21: "bad command",
    0x23: "unauthorised command",
    0x24: "unknown error",
    0x31: "card authentication of the SAM failed",
    0x32: "SAM authentication of the card failed",
    0x33: "verification error",
    0x34: "no card yet",
    0x40: "card type not recognised",
    0x41: "read failed",
    0x47: "random number failed",
    0x60: "SAM self-test failed",
    0x61: "SAM login failed",
    0x66: "SAM not authorised",
    0x80: "find card failed (no card on the reader)",
    0x81: "select card failed",
}
"""SW3 status byte -> meaning (HARDWARE.md section 1)."""

FrameProblem = Literal["preamble", "checksum", "length", "truncated", "garbage"]


class FrameError(ProtocolError):
    """Bytes that are not a valid SAM frame; ``kind`` says which rule they broke."""

    def __init__(self, kind: FrameProblem, message: str) -> None:
        super().__init__(message)
        self.kind: FrameProblem = kind


class SamStatusError(DeviceError):
    """The SAM answered a command with a failure status (SW3)."""

    retryable = False
    """Whether sending the command again may succeed (a transient card or line problem)."""

    def __init__(self, sw3: int, command: str | None = None) -> None:
        self.sw3 = sw3
        self.command = command
        self.meaning = SW3_MEANINGS.get(sw3, "unknown status code")
        what = f"{command} " if command else ""
        super().__init__(f"ID-card reader: {what}failed with SW3 {sw3:02X}: {self.meaning}")


class NoCardError(SamStatusError):
    """No card on the reader (80 find failed, 34 no card yet)."""


class SelectFailedError(SamStatusError):
    """The card was found but could not be selected (81), usually because it left the field."""

    retryable = True


class CardReadError(SamStatusError):
    """Reading the card failed (41 read failed, 91 no content), e.g. it was lifted mid-read."""

    retryable = True


class CardTypeError(SamStatusError):
    """The card is not a resident ID card (40)."""


class CardAuthenticationError(SamStatusError):
    """Card and SAM did not authenticate each other (31, 32, 33, 47): a damaged or forged card."""

    retryable = True


class CommandRejectedError(SamStatusError):
    """The SAM rejected the request itself (10 checksum, 11 length, 21 bad, 23 unauthorised, 24)."""

    retryable = True


class SamFailureError(SamStatusError):
    """The SAM module is unusable (60 self-test failed, 61 login failed, 66 not authorised)."""


class UnknownStatusError(SamStatusError):
    """An SW3 code outside the documented table."""


_CLASSES: dict[int, type[SamStatusError]] = {
    0x34: NoCardError,
    0x80: NoCardError,
    0x81: SelectFailedError,
    0x41: CardReadError,
    0x91: CardReadError,
    0x40: CardTypeError,
    0x31: CardAuthenticationError,
    0x32: CardAuthenticationError,
    0x33: CardAuthenticationError,
    0x47: CardAuthenticationError,
    0x10: CommandRejectedError,
    0x11: CommandRejectedError,
    0x21: CommandRejectedError,
    0x23: CommandRejectedError,
    0x24: CommandRejectedError,
    0x60: SamFailureError,
    0x61: SamFailureError,
    0x66: SamFailureError,
}

FAILURE_CODES: tuple[int, ...] = tuple(sorted(_CLASSES))
"""Every documented failure SW3 (the table minus 90 and 9F)."""


def status_error(sw3: int, command: str | None = None) -> SamStatusError:
    """The typed error for a failure status ``sw3`` answered to ``command``."""
    return _CLASSES.get(sw3, UnknownStatusError)(sw3, command)


def sw3_meaning(sw3: int) -> str:
    """What a status byte means, for messages and ``linli idcard decode``."""
    return SW3_MEANINGS.get(sw3, "unknown status code")
