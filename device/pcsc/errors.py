"""Errors of the PC/SC card family: status words the card answered, and card/reader conditions.

Every class inherits a :mod:`device.errors` class (and through it the matching builtin), so callers
that only know ``DeviceError`` or ``OSError`` still catch them.
"""

from __future__ import annotations

from device.errors import DeviceError, DeviceTimeoutError


class CardStatusError(DeviceError):
    """The card answered a command with a status word other than success.

    ``sw`` is the status word as an int (``0x6A82``), ``command`` the command's name (``"SELECT"``)
    and ``meaning`` the ISO 7816-4 meaning in words.
    """

    def __init__(self, sw: int, command: str, meaning: str, advice: str = "") -> None:
        self.sw = sw
        self.command = command
        self.meaning = meaning
        text = f"card answered {command} with status {sw:04X} ({meaning})"
        super().__init__(f"{text}; {advice}" if advice else text)


class CardFileNotFoundError(CardStatusError):
    """6A82: the application (SELECT) or file (READ BINARY) is not on this card."""


class SecurityStatusError(CardStatusError):
    """6982: security status not satisfied (the file needs authentication first)."""


class WrongOffsetError(CardStatusError):
    """6B00: READ BINARY offset (P1-P2) is outside the file."""


class WrongLengthError(CardStatusError):
    """6700: wrong length (Lc or Le) for this command."""


class InstructionNotSupportedError(CardStatusError):
    """6D00: the card does not know this instruction (INS)."""


class ClassNotSupportedError(CardStatusError):
    """6E00: the card does not accept this class byte (CLA)."""


class UnexpectedStatusError(CardStatusError):
    """Any status word the profile does not expect (the message still gives its ISO meaning)."""


class CardRemovedError(DeviceError):
    """The card went away (was removed, or lost contact) before or during an exchange."""


class NoCardError(DeviceTimeoutError):
    """No card was presented within the waiting time."""
