"""The typed device configuration (TOML), read once at start and validated (CONVENTIONS: Klipper).

Unknown or misspelled keys and out-of-range values are errors whose message names the key, e.g.
``idcard.poll_interval_ms: must be >= 300``. Backends are chosen here, never by platform checks: a
serial device is ``backend = "serial"`` whether its port is a real UART or a simulator's pty.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from device.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceSection(_Section):
    id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["kiosk", "locker"]
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Where the device keeps its state: print spools, and (later) the store.
    data_dir: str = "/var/lib/linli"


class IdCardSection(_Section):
    """ID-card reader (SAM, HARDWARE.md section 1)."""

    backend: Literal["serial", "none"] = "serial"
    port: str = "/dev/linli-idcard"
    baudrate: Annotated[int, Field(ge=9600, le=921600)] = 115200
    # One exchange at 115200 baud carries at most ~2.3 kB; 2 s is generous and still bounded.
    timeout_s: Annotated[float, Field(gt=0, le=10)] = 2.0
    # Readers do not cope with being polled faster than every ~300 ms (HARDWARE.md).
    poll_interval_ms: Annotated[int, Field(ge=300, le=10_000)] = 300
    retries: Annotated[int, Field(ge=0, le=5)] = 2
    read_fingerprint: bool = False
    # Most readers stop finding a card once it was read, so "lifted" cannot be seen; set this only
    # for a reader that keeps finding it (then lifting the card ends the kiosk session).
    report_lift: bool = False


class PcscSection(_Section):
    """PC/SC contact/contactless reader through pcscd (community / social-security card)."""

    backend: Literal["pcsc", "none"] = "pcsc"
    # Substring of the PC/SC reader name; empty picks the first reader.
    reader: str = ""
    # AID of the community card application (docs/pcsc-card-profile.md), hex.
    aid: Annotated[str, Field(pattern=r"^([0-9A-Fa-f]{2}){5,16}$")] = "F04C494E4C4901"
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0


class ScannerSection(_Section):
    """QR scanner: a serial module (GM65 family) or a camera."""

    backend: Literal["serial", "camera", "none"] = "serial"
    port: str = "/dev/linli-scanner"
    baudrate: Annotated[int, Field(ge=1200, le=115200)] = 9600
    # Camera source: a V4L2 index ("0"), a device path, a file or a stream URL understood by OpenCV.
    camera_source: str = "0"
    camera_width: Annotated[int, Field(ge=160, le=3840)] = 640
    camera_height: Annotated[int, Field(ge=120, le=2160)] = 480
    max_fps: Annotated[float, Field(gt=0, le=60)] = 10.0
    # The same code held in front of the camera is reported once per this many seconds.
    dedupe_s: Annotated[float, Field(ge=0, le=60)] = 2.0
    max_length: Annotated[int, Field(ge=16, le=4096)] = 1024
    reconnect_s: Annotated[float, Field(gt=0, le=60)] = 1.0


class A4PrinterSection(_Section):
    """A4 printer through a CUPS queue (HARDWARE.md section 4)."""

    backend: Literal["cups", "none"] = "cups"
    queue: Annotated[str, Field(min_length=1, max_length=127, pattern=r"^[^/#\s]+$")] = "linli-a4"
    # The cupsd to talk to (a socket path or host:port); empty: the system's (CUPS_SERVER or
    # /run/cups/cups.sock).
    server: Annotated[str, Field(max_length=255)] = ""
    # Cheap printers do not report paper-out; a job not done in this time is reported as stuck.
    job_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    poll_interval_s: Annotated[float, Field(gt=0, le=10)] = 0.5


class ReceiptPrinterSection(_Section):
    """ESC/POS receipt printer (HARDWARE.md section 3), over python-escpos's transports."""

    backend: Literal["serial", "network", "usb", "none"] = "serial"
    port: str = "/dev/linli-receipt"
    baudrate: Annotated[int, Field(ge=1200, le=921600)] = 9600
    host: str = "127.0.0.1"
    tcp_port: Annotated[int, Field(ge=1, le=65535)] = 9100
    usb_vendor_id: Annotated[int, Field(ge=0, le=0xFFFF)] = 0x0416
    usb_product_id: Annotated[int, Field(ge=0, le=0xFFFF)] = 0x5011
    # python-escpos capability profile (e.g. "default", "TM-T88V").
    profile: str = "default"
    paper_width_mm: Literal[58, 80] = 80
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 5.0


class CertificateSection(_Section):
    """Certificates the kiosk prints: who issues them and how they are signed."""

    community: Annotated[str, Field(min_length=1, max_length=64)] = "示例社区居民委员会"
    # Extra template files (TOML); the built-in templates are always available.
    templates_dir: str = ""
    # Ed25519 private key (PEM) that signs the verification QR; key id defaults to the device id.
    signing_key: str = "/etc/linli/keys/device-ed25519.pem"
    key_id: str = ""
    # CJK TrueType font; empty asks fontconfig (fc-match) for one.
    font: str = ""


class SyncSection(_Section):
    """The sync agent's MQTT link to the site broker (docs/sync-agent.md). Username = device id."""

    # Broker DNS name or IP; it must be a SAN of the broker certificate. Empty: no sync.
    host: Annotated[str, Field(max_length=253)] = ""
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    # The site CA (ca.crt from `linli provision broker`); the broker is verified against it only.
    ca_file: str = "/etc/linli/keys/site-ca.crt"
    # The broker password, inline or (preferred: it stays out of the config) from a file.
    # No length rule on `password`: a validation error would echo the value.
    password: Annotated[str, Field(repr=False)] = ""
    password_file: str = ""
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 60
    # How long the broker keeps the device's session (subscriptions, queued acks) while offline.
    session_expiry_s: Annotated[int, Field(ge=0, le=30 * 86400)] = 7 * 86400
    # Events per up/events message; the payload is also kept under 256 KiB.
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 100
    # Batches published but not yet covered by a down/ack.
    max_inflight: Annotated[int, Field(ge=1, le=20)] = 8
    # Without an ack for this long, everything unacked is published again.
    ack_timeout_s: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # Reconnect delays: jittered, doubling from backoff_min_s up to backoff_max_s.
    backoff_min_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    backoff_max_s: Annotated[float, Field(gt=0, le=3600)] = 120.0
    # How often the outbox is checked for events written by other processes (notify() is instant).
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    # The server's command keys: one Ed25519 public key per file, named KID.pem. None there: the
    # device takes no commands (down/cmd is not even subscribed).
    server_keys_dir: str = "/etc/linli/keys/server"
    # Clock-skew margin for a command's issue and expiry times.
    command_skew_s: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # How often document versions are asked for besides at every connect.
    documents_interval_s: Annotated[float, Field(ge=5, le=86400)] = 60.0

    # Field validators (not a model validator): an error then echoes one value, never the password.
    @field_validator("password_file")
    @classmethod
    def _one_password(cls, value: str, info: ValidationInfo) -> str:
        if value and info.data.get("password"):
            raise ValueError("set password_file or password, not both")
        return value

    @field_validator("backoff_max_s")
    @classmethod
    def _max_above_min(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("backoff_min_s")
        if low is not None and value < low:
            raise ValueError("must be >= backoff_min_s")
        return value


class LocksSection(_Section):
    """Locker locks and door sensors (HARDWARE.md section 6, docs/locks.md): GPIO relays and reed
    sensors, or RS485 lock-control boards of the "8A" family."""

    backend: Literal["gpio", "rs485", "none"] = "none"
    # Solenoids take short pulses only (inrush ~1-1.5 A); held longer they overheat.
    pulse_ms: Annotated[int, Field(ge=50, le=2000)] = 200
    # gpio: BCM pin numbers, lock N on the N-th entry of each list.
    relay_pins: list[Annotated[int, Field(ge=0, le=27)]] = []
    door_pins: list[Annotated[int, Field(ge=0, le=27)]] = []
    # Most relay boards energise the coil when the input is pulled low.
    relay_active_low: bool = True
    # A reed switch to ground with the pull-up on reads low while the door is closed.
    door_closed_level: Literal["low", "high"] = "low"
    # A door reading must hold this long before it counts (reed switches bounce).
    debounce_ms: Annotated[int, Field(ge=1, le=1000)] = 30
    # rs485: one serial port, one or more boards (address switches), locks per board.
    port: str = "/dev/linli-locks"
    baudrate: Annotated[int, Field(ge=1200, le=115200)] = 9600
    boards: list[Annotated[int, Field(ge=1, le=254)]] = [1]
    locks_per_board: Annotated[int, Field(ge=1, le=24)] = 24
    timeout_s: Annotated[float, Field(gt=0, le=5)] = 0.3
    # How often every board is asked for all its doors (reports in between are read too).
    poll_interval_ms: Annotated[int, Field(ge=20, le=10_000)] = 200

    @model_validator(mode="after")
    def _pins_match(self) -> LocksSection:
        relays, doors = self.relay_pins, self.door_pins
        if len(doors) != len(relays):
            raise ValueError(
                f"door_pins has {len(doors)} pins, relay_pins {len(relays)}: one of each per lock"
            )
        if len(set(doors) | set(relays)) != len(doors) + len(relays):
            raise ValueError("a pin is used twice among relay_pins and door_pins")
        return self

    @field_validator("boards")
    @classmethod
    def _boards_distinct(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("a board address is listed twice")
        return value


class LockerSection(_Section):
    """Locker firmware behaviour (docs/locker.md): compartment sizes, door timing, credentials,
    scanner lockout. Compartment N is lock N of ``[locks]``."""

    # One size per compartment (S, M or L), compartment N on the N-th entry; empty: all M.
    sizes: list[Literal["S", "M", "L"]] = []
    # A door must open this long after its pulse, or the pulse is retried once, then: fault.
    open_confirm_s: Annotated[float, Field(ge=0.5, le=60)] = 5.0
    # A door open longer than this raises an alarm event (and the reminder hook).
    door_alarm_s: Annotated[float, Field(ge=5, le=3600)] = 120.0
    # How often the reminder hook (sound/LED) repeats while the alarm lasts.
    reminder_interval_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    # Clock-skew margin for credentials' nbf/exp (the locker's clock may drift offline).
    credential_skew_s: Annotated[float, Field(ge=0, le=3600)] = 300.0
    # A scanned text longer than this is refused as oversized (a version 9 QR holds ~335).
    max_credential_chars: Annotated[int, Field(ge=64, le=4296)] = 700
    # After this many invalid scans in a row the scanner is locked out...
    lockout_after: Annotated[int, Field(ge=1, le=100)] = 5
    # ...for this long, doubling with every further lockout up to lockout_max_s.
    lockout_base_s: Annotated[float, Field(ge=1, le=3600)] = 30.0
    lockout_max_s: Annotated[float, Field(ge=1, le=86400)] = 900.0
    # An open request not yet carried out when the locker restarts is dropped after this long
    # (the person has left); younger ones are carried out.
    intent_ttl_s: Annotated[float, Field(ge=5, le=3600)] = 120.0
    # How often doors and timers are checked.
    tick_ms: Annotated[int, Field(ge=5, le=1000)] = 20

    @field_validator("lockout_max_s")
    @classmethod
    def _max_above_base(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("lockout_base_s")
        if base is not None and value < base:
            raise ValueError("must be >= lockout_base_s")
        return value


class KioskSection(_Section):
    """Kiosk behaviour (docs/kiosk.md): session timeouts, community, subsidy rules, the screen."""

    # The area id of this kiosk's community: its notices are shown (with those for every
    # community). Empty: every community's notices.
    community_id: Annotated[str, Field(max_length=64)] = ""
    # No touch for this long ends a session (personal data wiped); a countdown shows the last 15 s.
    idle_timeout_s: Annotated[float, Field(ge=10, le=600)] = 60.0
    # "Printed" and "card refused" screens go back to the start sooner.
    result_timeout_s: Annotated[float, Field(ge=5, le=120)] = 20.0
    # Elderly-subsidy certification (高龄补贴认证): from this age, certify each year by the
    # deadline ("MM-DD"; empty: no deadline shown).
    subsidy_min_age: Annotated[int, Field(ge=60, le=120)] = 80
    subsidy_deadline: Annotated[
        str, Field(pattern=r"^$|^(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$")
    ] = ""
    # How long an online question (a resident from elsewhere, online applications) may take.
    online_timeout_s: Annotated[float, Field(gt=0, le=30)] = 4.0
    # The Kivy screen: full screen on the kiosk; a window of this size otherwise.
    fullscreen: bool = True
    width: Annotated[int, Field(ge=640, le=3840)] = 1280
    height: Annotated[int, Field(ge=480, le=2160)] = 800
    # Start in the elderly mode (larger text, fewer choices per screen); residents can toggle it.
    elderly_mode: bool = False
    # A local control socket (mode 0600: root only) where `linli kiosk touch` / `linli kiosk
    # screen` and the virtual site press the screen's buttons and read which screen is shown
    # (docs/kiosk-ui.md). Empty: off; an absolute path, e.g. "/run/linli/kiosk.sock": listen there.
    control_socket: str = ""

    @field_validator("subsidy_deadline")
    @classmethod
    def _a_day_of_every_year(cls, value: str) -> str:
        if value:
            month, day = value.split("-")
            try:
                dt.date(2001, int(month), int(day))  # not a leap year: no 02-29
            except ValueError:
                raise ValueError("must be a day every year has (MM-DD, not 02-29)") from None
        return value

    @field_validator("control_socket")
    @classmethod
    def _an_absolute_socket_path(cls, value: str) -> str:
        if value and not value.startswith("/"):
            raise ValueError('must be an absolute path (or "" for no control socket)')
        if len(value.encode()) > 107:  # sun_path: 108 bytes with the NUL
            raise ValueError("must be at most 107 bytes (a Unix socket path)")
        return value

    def subsidy_deadline_md(self) -> tuple[int, int] | None:
        """``subsidy_deadline`` as (month, day), or None."""
        if not self.subsidy_deadline:
            return None
        month, day = self.subsidy_deadline.split("-")
        return int(month), int(day)


class EnrollSection(_Section):
    """First-boot enrollment (docs/provisioning.md): ``linli sync enroll`` makes the device's
    key here, sends a CSR with the one-time token, and writes the certificate and the broker
    password (to ``[sync] password_file``). Empty ``url``: a pre-generated bundle, no enrollment.
    """

    # The server's base URL, e.g. "https://linli.example.cn".
    url: Annotated[str, Field(max_length=512, pattern=r"^(https?://[^\s/]+.*)?$")] = ""
    token_file: str = "/etc/linli/keys/enroll-token"  # noqa: S105 -- a path, not a token
    # The device's Ed25519 identity key (kiosks sign certificates with it: [certificate]).
    key_file: str = "/etc/linli/keys/device-ed25519.pem"
    cert_file: str = "/etc/linli/keys/device.crt"
    # Trust for an https url: a CA file, or empty for the system's trust store.
    ca_file: str = ""
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 30.0


class DeviceConfig(_Section):
    device: DeviceSection
    idcard: IdCardSection = IdCardSection()
    pcsc: PcscSection = PcscSection()
    scanner: ScannerSection = ScannerSection()
    a4printer: A4PrinterSection = A4PrinterSection()
    receipt: ReceiptPrinterSection = ReceiptPrinterSection()
    certificate: CertificateSection = CertificateSection()
    sync: SyncSection = SyncSection()
    locks: LocksSection = LocksSection()
    locker: LockerSection = LockerSection()
    kiosk: KioskSection = KioskSection()
    enroll: EnrollSection = EnrollSection()


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key (misspelled?)"
    if kind == "missing":
        return f"{key}: required key is missing"
    given = error.get("input")
    return f"{key}: {error['msg']} (got {given!r})"


def parse_config(data: dict[str, Any], source: str = "<config>") -> DeviceConfig:
    """Validate a parsed TOML document; raise :class:`ConfigError` naming every bad key."""
    try:
        return DeviceConfig.model_validate(data)
    except ValidationError as err:
        problems = "; ".join(_describe(e) for e in err.errors())
        raise ConfigError(f"{source}: invalid configuration: {problems}") from err


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a device configuration file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as err:
        raise ConfigError(f"{path}: configuration file not found") from err
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from err
    return parse_config(data, str(path))
