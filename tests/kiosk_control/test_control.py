"""The kiosk daemon's control socket (kiosk_ui/control.py): a real :class:`KioskDaemon` from its
TOML file with ``[kiosk] control_socket`` set, driven through :class:`ControlClient`, raw socket
lines and ``linli kiosk touch`` / ``linli kiosk screen`` in subprocesses."""

from __future__ import annotations

import json
import logging
import os
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from device.config import DeviceConfig, parse_config
from device.errors import ConfigError
from device.privacy import mask_name
from hardware_sim.cups import SimQueue
from hardware_sim.escpos.server import EscposTcpPrinter
from hardware_sim.sam import SamEmulator
from kiosk_ui.control import (
    MAX_LINE,
    ControlClient,
    ControlReplyError,
    ControlServer,
    ControlUnavailableError,
)
from kiosk_ui.daemon import KioskDaemon
from linli.commands.kiosk import kiosk
from tests.certificates.conftest import household_record
from tests.kiosk_control.conftest import stale_socket
from tests.kiosk_session.conftest import RESIDENT
from tests.mqtt_helpers import wait_for

pytestmark = pytest.mark.timeout(90)

LINLI = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "linli"
SCREEN_KEYS = {"id", "state", "actions", "busy", "revision"}

Start = Callable[[DeviceConfig], KioskDaemon]


class Line:
    """A raw connection to the control socket: bytes in, one reply line out."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")

    def ask(self, data: bytes) -> bytes:
        self.sock.sendall(data)
        reply = self.file.readline()
        assert reply.endswith(b"\n"), f"no whole reply line: {reply!r}"
        return reply

    def ask_json(self, data: bytes) -> dict[str, Any]:
        reply = json.loads(self.ask(data))
        assert isinstance(reply, dict)
        return reply

    def nothing_pending(self) -> bool:
        """No reply line more than asked for (e.g. one per piece of a long line)."""
        self.sock.setblocking(False)
        try:
            self.sock.recv(1)
        except BlockingIOError:
            return True
        finally:
            self.sock.settimeout(10)
        return False

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def personal_needles() -> list[bytes]:
    """The resident's name, masked name, ID number and address, as UTF-8 and as JSON escapes."""
    texts = [
        RESIDENT.name,
        mask_name(RESIDENT.name),
        RESIDENT.id_number,
        RESIDENT.address,
        household_record()["address"],
    ]
    needles = [t.encode() for t in texts]
    needles += [json.dumps(t)[1:-1].encode() for t in texts]  # ensure_ascii's \\uXXXX
    return needles


def test_a_certificate_printed_through_the_control_socket(
    kiosk_config: DeviceConfig,
    start_kiosk: Start,
    card_slot: SamEmulator,
    receipt_model: EscposTcpPrinter,
    queue: SimQueue,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    path = Path(kiosk_config.kiosk.control_socket)
    start_kiosk(kiosk_config)
    client = ControlClient(path)
    raw = Line(path)
    replies: list[bytes] = []

    def look() -> dict[str, Any]:
        replies.append(raw.ask(b'{"op": "screen"}\n'))
        reply = json.loads(replies[-1])
        assert set(reply["screen"]) == SCREEN_KEYS
        return dict(reply)

    try:
        wait_for(lambda: client.screen()["reader_ok"], 10, "reader available")
        idle = look()
        assert idle["ok"] is True and idle["online"] is False  # no sync.host
        assert idle["screen"]["id"] == "idle" and idle["screen"]["state"] == "idle"
        assert idle["screen"]["actions"] == ["guide", "notices", "progress"]

        card_slot.insert(RESIDENT)
        menu = client.wait("menu", 10)
        assert menu["ok"] is True, menu
        assert menu["screen"]["state"] == "identified"
        assert menu["screen"]["revision"] > idle["screen"]["revision"]
        look()

        chosen = client.touch("certificate")
        assert chosen["ok"] is True and chosen["screen"]["id"] == "choose_template"
        assert "template" in chosen["screen"]["actions"]  # the list lines' action, once
        look()
        assert client.touch("template", name="no-such-template")["ok"] is False
        making = client.touch("template", name="residence")
        assert making["ok"] is True
        preview = client.wait("preview", 20)
        assert preview["ok"] is True, preview
        assert preview["screen"]["actions"] == ["confirm", "back", "end"]
        look()
        printing = client.touch("confirm")
        assert printing["ok"] is True
        assert printing["screen"]["id"] in ("printing", "printed")
        printed = client.wait("printed", 30)
        assert printed["ok"] is True, printed
        assert printed["screen"]["state"] == "done" and printed["screen"]["busy"] is False
        look()
        assert len(queue.wait_for_output(1)) == 1
        wait_for(lambda: len(receipt_model.cut_pages) == 1, 10, "the receipt")
        assert client.touch("end")["screen"]["id"] == "idle"
    finally:
        raw.close()

    # Nothing personal in any reply, even as JSON escapes, nor in what was logged meanwhile.
    sent = b"".join(replies)
    for needle in personal_needles():
        assert needle not in sent
    for key in (b'"title"', b'"body"', b'"items"', b'"image"', b'"args"'):
        assert key not in sent
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert RESIDENT.name not in logged and RESIDENT.id_number not in logged


def test_bad_requests_get_an_error_and_the_connection_stays_usable(
    kiosk_config: DeviceConfig, start_kiosk: Start
) -> None:
    path = Path(kiosk_config.kiosk.control_socket)
    start_kiosk(kiosk_config)
    line = Line(path)
    try:
        cases: list[tuple[bytes, str]] = [
            (b"not json at all\n", "not JSON"),
            (b"\xff\xfe{}\n", "not UTF-8"),
            (b"[1, 2]\n", "must be a JSON object"),
            (b"{}\n", 'no "op"'),
            (b'{"op": 3}\n', '"op" must be a string'),
            (b'{"op": "launch"}\n', "unknown op 'launch'"),
            (b'{"op": "screen", "verbose": true}\n', "unknown key 'verbose'"),
            (b'{"op": "touch"}\n', '"action" must be a non-empty string'),
            (b'{"op": "touch", "action": ["end"]}\n', '"action" must be'),
            (b'{"op": "touch", "action": "guide", "args": "x"}\n', '"args" must be an object'),
            (b'{"op": "touch", "action": "guide", "args": {"k": 1}}\n', "must be a string"),
            (b'{"op": "touch", "action": "guide", "args": {"action": "x"}}\n', "valid argument"),
            (b'{"op": "wait", "screen": "menu", "timeout_s": "soon"}\n', '"timeout_s" must be'),
            (b'{"op": "wait", "screen": "menu", "timeout_s": 1e9}\n', '"timeout_s" must be'),
            (b'{"op": "wait", "screen": "menu", "timeout_s": NaN}\n', '"timeout_s" must be'),
            (b'{"op": "wait", "screen": "menu", "timeout_s": true}\n', '"timeout_s" must be'),
            (b"[" * 2000 + b"]" * 2000 + b"\n", "not JSON"),  # too deep for the parser
            (b'{"op": "screen", "pad": "' + b"x" * 3 * MAX_LINE + b'"}\n', "longer than 4096"),
        ]
        for request, error in cases:
            reply = line.ask_json(request)
            assert reply["ok"] is False, request[:60]
            assert error in reply["error"], (request[:60], reply)
            assert set(reply) == {"ok", "error"}
        assert line.nothing_pending()  # one reply per line, the long one included

        # A line of exactly MAX_LINE bytes is still read (padded with spaces JSON allows).
        request = b'{"op": "screen"}'
        assert line.ask_json(request.ljust(MAX_LINE) + b"\n")["ok"] is True

        # Blank lines are skipped without a reply; the same connection still answers.
        screen = line.ask_json(b'\n\r\n{"op": "screen"}\r\n')
        assert screen["ok"] is True and screen["screen"]["id"] == "idle"

        # A touch the screen does not offer, or with other args, is refused like a stale one.
        unknown = line.ask_json(b'{"op": "touch", "action": "launch_rockets"}\n')
        assert unknown["ok"] is False and unknown["screen"]["id"] == "idle"
        assert "does not offer 'launch_rockets'" in unknown["error"]
        forged = line.ask_json(b'{"op": "touch", "action": "guide", "args": {"key": "x"}}\n')
        assert forged["ok"] is False and "with these args" in forged["error"]

        # A wait that times out says so, after its timeout.
        began = time.monotonic()
        waited = line.ask_json(b'{"op": "wait", "screen": "printed", "timeout_s": 0.3}\n')
        assert time.monotonic() - began >= 0.3
        assert waited["ok"] is False and waited["screen"]["id"] == "idle"
        assert "not reached" in waited["error"]

        # After all that, the same connection and a new one both still work.
        assert line.ask_json(b'{"op": "touch", "action": "guide"}\n')["ok"] is True
        assert ControlClient(path).screen()["screen"]["id"] == "guide"
        assert line.nothing_pending()
    finally:
        line.close()


def test_the_socket_file_root_only_stale_replaced_live_refused_removed_at_stop(
    kiosk_config: DeviceConfig,
    start_kiosk: Start,
    sock_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "kiosk_ui.control")
    path = Path(kiosk_config.kiosk.control_socket)
    stale_socket(path)  # as a daemon killed with SIGKILL leaves it
    with pytest.raises(ControlUnavailableError, match="nothing listens"):
        ControlClient(path).screen()

    before = os.umask(0)  # the mode must not depend on the umask
    try:
        daemon = start_kiosk(kiosk_config)
    finally:
        os.umask(before)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert ControlClient(path).screen()["ok"] is True  # the stale file was replaced
    assert "replacing the stale kiosk control socket" in caplog.text
    if os.geteuid() == 0:  # another user is refused by the socket's mode (the dir allowing)
        sock_dir.chmod(0o755)
        connect = f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"
        other = subprocess.run(
            ["/usr/bin/python3", "-c", connect],
            user=65534, group=65534, capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert other.returncode == 1 and "PermissionError" in other.stderr, other.stderr

    # A second server on the live socket is refused, and the first one keeps serving.
    with pytest.raises(ConfigError, match="already listening"):
        ControlServer(path, daemon.session, daemon.indicators).start()
    assert ControlClient(path).screen()["ok"] is True
    # A path that is not a socket is not deleted to make room.
    not_a_socket = sock_dir / "notes.txt"
    not_a_socket.write_text("keep me", encoding="utf-8")
    with pytest.raises(ConfigError, match="not a socket"):
        ControlServer(not_a_socket, daemon.session, daemon.indicators).start()
    assert not_a_socket.read_text(encoding="utf-8") == "keep me"

    # A connection left open (and one waiting) do not hold the stop up.
    idle_conn = Line(path)
    waiter = Line(path)
    waiter.sock.sendall(b'{"op": "wait", "screen": "printed", "timeout_s": 60}\n')
    time.sleep(0.2)
    began = time.monotonic()
    daemon.stop()
    assert time.monotonic() - began < 10
    assert not path.exists()
    last = waiter.file.readline()  # the wait ended, not hung: told so, or hung up on
    assert last == b"" or "daemon is stopping" in json.loads(last)["error"]
    idle_conn.close()
    waiter.close()
    with pytest.raises(ControlUnavailableError, match="no control socket"):
        ControlClient(path).screen()


def test_the_config_key_is_checked() -> None:
    base: dict[str, Any] = {"device": {"id": "k", "kind": "kiosk"}}
    assert parse_config(base).kiosk.control_socket == ""
    for bad, words in (("kiosk.sock", "absolute path"), ("/" + "x" * 120, "107 bytes")):
        with pytest.raises(ConfigError, match=words) as err:
            parse_config({**base, "kiosk": {"control_socket": bad}})
        assert "control_socket" in str(err.value)


def _linli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(LINLI), "kiosk", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _done(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_the_cli_touches_reads_and_waits(
    kiosk_config: DeviceConfig, start_kiosk: Start, sock_dir: Path
) -> None:
    assert LINLI.exists(), "the venv's linli entry point (pip install -e .)"
    path = Path(kiosk_config.kiosk.control_socket)
    daemon = start_kiosk(kiosk_config)
    stale = sock_dir / "stale.sock"
    stale_socket(stale)
    sock = str(path)

    # The real entry point; calls that change nothing run side by side (a start-up is ~2 s).
    screen = _linli("screen", "--socket", sock)
    missing = _linli("screen", "--socket", str(sock_dir / "none.sock"))
    refused = _linli("touch", "--socket", str(stale), "guide")
    unknown = _linli("touch", "--socket", sock, "launch_rockets")

    code, out, _ = _done(screen)
    assert code == 0
    reply = json.loads(out)
    assert reply["ok"] is True and reply["screen"]["id"] == "idle"
    assert set(reply) == {"ok", "screen", "online", "reader_ok"}
    code, out, err = _done(missing)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "no control socket" in err
    code, out, err = _done(refused)
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "nothing listens" in err
    code, out, _ = _done(unknown)
    assert code == 1
    assert json.loads(out)["ok"] is False
    # The argument checks, in this process (click's runner: no start-up to pay).
    bad_arg = CliRunner().invoke(kiosk, ["touch", "--socket", sock, "guide", "--arg", "novalue"])
    assert bad_arg.exit_code == 2 and "KEY=VALUE" in bad_arg.output
    late = CliRunner().invoke(
        kiosk, ["screen", "--socket", sock, "--wait", "menu", "--timeout", "0.2"]
    )
    assert late.exit_code == 1 and json.loads(late.stdout)["screen"]["id"] == "idle"
    assert daemon.session.screen.id == "idle"  # none of those touched anything

    # A touch with --arg, and a --wait that sees it (whichever process runs first).
    assert ControlClient(path).touch("guide")["screen"]["id"] == "guide"
    first = daemon.session.screen.items[0].action
    assert first is not None
    key = first.kwargs()["key"]
    waiting = _linli("screen", "--socket", sock, "--wait", "guide_item", "--timeout", "30")
    touching = _linli("touch", "--socket", sock, "guide_item", "--arg", f"key={key}")
    code, out, _ = _done(touching)
    assert code == 0 and json.loads(out)["screen"]["id"] == "guide_item"
    code, out, _ = _done(waiting)
    assert code == 0 and json.loads(out)["screen"]["id"] == "guide_item"
    assert daemon.session.screen.id == "guide_item"


def test_the_client_says_what_is_wrong(sock_dir: Path) -> None:
    """Without a daemon: a socket that hangs up, or answers something that is not JSON."""
    path = sock_dir / "odd.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(2)
        server.settimeout(5)

        def answer(reply: bytes) -> Callable[[], None]:
            def serve() -> None:
                conn, _ = server.accept()
                with conn:
                    conn.recv(4096)
                    conn.sendall(reply)

            return serve

        for reply, words in ((b"", "without a reply"), (b"<html>\n", "not JSON")):
            thread = threading.Thread(target=answer(reply))
            thread.start()
            with pytest.raises(ControlReplyError, match=words):
                ControlClient(path).screen()
            thread.join(5)
