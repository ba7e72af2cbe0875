"""The crash tests' locker: the real ``linli locker run`` as a child process, against lock boards
and a GM65 scanner emulated on ptys that live in the test process (so they outlive a killed
child), with its store read read-only, and the server's side of ``down/cmd`` on a real Mosquitto.

The child can be started with ``LINLI_CRASH_AT`` (locker/crashpoints.py) to SIGKILL itself at a
named step; :meth:`LockerRig.wait_killed` proves it did.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from device.commands import new_command_id, sign_command
from device.credential import SigningKey, save_verify_key
from device.protocol import topic
from device.sync.daemon import STORE_FILE
from hardware_sim.lockboard import LockBoardBus
from hardware_sim.mosquitto import MosquittoTestBroker, MqttTestClient
from hardware_sim.scanner import Gm65Emulator

ROOT = Path(__file__).resolve().parents[2]
DEVICE_ID = "locker-crash-1"
SIZES = ("S", "M", "M", "L")
LOCKS = len(SIZES)
START_TIMEOUT_S = 20.0
STEP_TIMEOUT_S = 15.0
ACTIVE = ("pending", "pulsed", "opened")
"""Intent statuses of a request in progress (locker/intents.py)."""


def wait_for(
    predicate: Callable[[], bool],
    what: str,
    timeout_s: float = STEP_TIMEOUT_S,
    rig: LockerRig | None = None,
) -> None:
    """Poll ``predicate`` until it holds; an AssertionError naming ``what`` (and the child's log
    tail when ``rig`` is given) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    tail = f"\n{rig.log_tail()}" if rig is not None else ""
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}{tail}")


@dataclass(frozen=True)
class Event:
    """One outbox event of the locker's store."""

    seq: int
    type: str
    boot: int
    data: dict[str, Any]


@dataclass(frozen=True)
class SyncLink:
    """What the child's ``[sync]`` needs to reach the broker."""

    port: int
    ca_file: Path
    password: str


class LockerRig:
    """One locker: its config and data dir under ``root``, its lock bus and scanner, its child.

    ``data_from``: a data dir to start from (a copy of a set-up locker's, see conftest).
    ``locker``: ``[locker]`` keys to set besides the tests' short timings (e.g. ``intent_ttl_s``).
    """

    def __init__(
        self,
        root: Path,
        server_key: SigningKey,
        *,
        sync: SyncLink | None = None,
        data_from: Path | None = None,
        locker: Mapping[str, float] | None = None,
    ) -> None:
        self.root = root
        self.data_dir = root / "data"
        keys_dir = root / "server-keys"
        keys_dir.mkdir(parents=True, exist_ok=True)
        save_verify_key(server_key.verify_key, keys_dir / f"{server_key.kid}.pem")
        if data_from is not None:
            shutil.copytree(data_from, self.data_dir)
        self.bus = LockBoardBus([1], LOCKS, link=root / "locks")
        self.bus.start()
        self.scanner = Gm65Emulator(link=root / "scanner")
        self.scanner.start()
        self.config = root / "locker.toml"
        self.config.write_text(
            _config(root, keys_dir, self.data_dir, sync, locker or {}), encoding="utf-8"
        )
        self._intents_before = self._last_intent()
        self.child: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self._log: Path | None = None

    # -- the child ---------------------------------------------------------------------------------
    def start(self, crash_at: str | None = None) -> None:
        """Start ``linli locker run`` (killing itself at ``crash_at`` if given) and wait until it
        is ready: it opens the scanner's port last, after the compartments are created, the doors
        read, what the last run left sorted out, and the sync link started. (Its log cannot tell:
        ``-v`` has no effect, see the crash tests' report.)"""
        assert self.child is None or self.child.poll() is not None, "the locker still runs"
        env = {k: v for k, v in os.environ.items() if k != "LINLI_CRASH_AT"}
        if crash_at is not None:
            env["LINLI_CRASH_AT"] = crash_at
        self.runs += 1
        self._log = self.root / f"run-{self.runs}.log"
        with self._log.open("wb") as log:
            self.child = subprocess.Popen(
                [sys.executable, "-m", "linli", "locker", "run", "--config", str(self.config)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        scanner_pty = os.path.realpath(self.scanner.path)

        def running() -> bool:
            if self.child is not None and self.child.poll() is not None:
                raise AssertionError(
                    f"the locker exited ({self.child.returncode}) before it was ready\n"
                    + self.log_tail()
                )
            return self._child_has_open(scanner_pty)

        wait_for(running, "the locker to be ready", START_TIMEOUT_S, self)

    def wait_killed(self) -> None:
        """Wait for the child to die and prove it was SIGKILLed (by its crash point)."""
        assert self.child is not None
        try:
            code = self.child.wait(timeout=STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                "the locker did not kill itself at its crash point\n" + self.log_tail()
            ) from None
        assert code == -signal.SIGKILL, f"exit status {code}, not SIGKILL\n{self.log_tail()}"

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; it must exit cleanly."""
        assert self.child is not None and self.child.poll() is None, "the locker is not running"
        self.child.send_signal(signal.SIGTERM)
        try:
            code = self.child.wait(timeout=STEP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError("the locker ignored SIGTERM\n" + self.log_tail()) from None
        assert code == 0, f"exit status {code} after SIGTERM\n{self.log_tail()}"

    def close(self) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.kill()
            self.child.wait(timeout=10)
        self.scanner.close()
        self.bus.close()

    def _child_has_open(self, path: str) -> bool:
        """Whether the child process holds ``path`` open (Linux: its /proc fd links)."""
        assert self.child is not None
        fds = Path(f"/proc/{self.child.pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fds.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) == path:
                        return True
        return False

    def _log_text(self) -> str:
        if self._log is None or not self._log.exists():
            return ""
        return self._log.read_text(encoding="utf-8", errors="replace")

    def log_tail(self, chars: int = 3000) -> str:
        return f"--- {self._log} (tail) ---\n{self._log_text()[-chars:]}"

    # -- the world ---------------------------------------------------------------------------------
    def scan(self, text: str) -> None:
        """Someone holds ``text`` (a QR code) in front of the scanner."""
        self.scanner.show(text)

    def pulses(self, lock: int) -> int:
        """Pulses the lock boards really gave ``lock`` (finished ones)."""
        return len(self.bus.pulses(lock))

    # -- the store, read-only --------------------------------------------------------------------
    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        path = self.data_dir / STORE_FILE
        with contextlib.closing(
            sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        ) as conn:
            return list(conn.execute(sql, params))

    def events(self, type_: str | None = None, after: int = 0) -> list[Event]:
        """Outbox events in seq order (all of them: nobody acks, so nothing leaves the outbox)."""
        rows = self.query(
            "SELECT seq, type, boot, sealed, data FROM outbox WHERE seq > ? ORDER BY seq", (after,)
        )
        found = [
            Event(int(seq), str(kind), int(boot), {} if sealed else json.loads(data))
            for seq, kind, boot, sealed, data in rows
        ]
        return [e for e in found if type_ is None or e.type == type_]

    def last_seq(self) -> int:
        """The last event's seq (0 before the first start: no store yet)."""
        if not (self.data_dir / STORE_FILE).exists():
            return 0
        rows = self.query("SELECT coalesce(max(seq), 0) FROM outbox")
        return int(rows[0][0])

    def _last_intent(self) -> int:
        if not (self.data_dir / STORE_FILE).exists():
            return 0
        return int(self.query("SELECT coalesce(max(id), 0) FROM locker_intents")[0][0])

    def boot(self) -> int:
        rows = self.query("SELECT value FROM meta WHERE key = 'boot'")
        return int(rows[0][0])

    def compartment(self, number: int) -> dict[str, Any]:
        [(state, case, content, door)] = self.query(
            "SELECT state, case_id, content, door FROM compartments WHERE number = ?", (number,)
        )
        return {"state": state, "case": case, "content": content, "door": door}

    def states(self) -> dict[int, str]:
        return {int(n): str(s) for n, s in self.query("SELECT number, state FROM compartments")}

    def request(self, number: int) -> str | None:
        """The status of the open request in progress for compartment ``number``, if any."""
        rows = self.query(
            "SELECT status FROM locker_intents WHERE compartment = ? "
            "AND status IN ('pending', 'pulsed', 'opened')",
            (number,),
        )
        return None if not rows else str(rows[0][0])

    def requests_in_progress(self) -> list[tuple[int, str]]:
        rows = self.query(
            "SELECT compartment, status FROM locker_intents "
            "WHERE status IN ('pending', 'pulsed', 'opened') ORDER BY id"
        )
        return [(int(n), str(s)) for n, s in rows]

    # -- driving a flow ----------------------------------------------------------------------------
    def wait_request(self, number: int, status: str) -> None:
        wait_for(
            lambda: self.request(number) == status,
            f"compartment {number}'s request to be {status}",
            rig=self,
        )

    def finish(self, number: int) -> None:
        """Let the flow on ``number`` end as a person would: once the locker has seen the door
        open, push it shut; return when a request journaled on this rig there is done and none is
        in progress. (Not merely "none in progress": a command lost in a crash is journaled only
        when the broker redelivers it, a moment after the restarted locker is online.)"""

        def done() -> bool:
            status = self.request(number)
            if status == "opened" and self.bus.door_is_open(number):
                self.bus.close_door(number)
            return status is None and bool(
                self.query(
                    "SELECT 1 FROM locker_intents WHERE compartment = ? AND status = 'done' "
                    "AND id > ?",
                    (number, self._intents_before),
                )
            )

        wait_for(done, f"the flow on compartment {number} to end", rig=self)


def _config(
    root: Path,
    keys_dir: Path,
    data_dir: Path,
    sync: SyncLink | None,
    locker: Mapping[str, float],
) -> str:
    def q(value: str | Path) -> str:
        return json.dumps(str(value))  # a TOML basic string

    sync_lines = [f"server_keys_dir = {q(keys_dir)}"]
    if sync is not None:
        sync_lines += [
            'host = "127.0.0.1"',
            f"port = {sync.port}",
            f"ca_file = {q(sync.ca_file)}",
            f"password = {q(sync.password)}",
            "keepalive_s = 10",
            "backoff_min_s = 0.05",
            "backoff_max_s = 0.4",
            "poll_interval_s = 0.1",
        ]
    sizes = ", ".join(q(s) for s in SIZES)
    return "\n".join(
        [
            "[device]",
            f"id = {q(DEVICE_ID)}",
            'kind = "locker"',
            f"data_dir = {q(data_dir)}",
            "[locks]",
            'backend = "rs485"',
            f"port = {q(root / 'locks')}",
            "boards = [1]",
            f"locks_per_board = {LOCKS}",
            "poll_interval_ms = 50",
            "[locker]",
            f"sizes = [{sizes}]",
            "open_confirm_s = 1.5",
            "tick_ms = 20",
            *(f"{name} = {value}" for name, value in locker.items()),
            "[scanner]",
            'backend = "serial"',
            f"port = {q(root / 'scanner')}",
            "[sync]",
            *sync_lines,
            "",
        ]
    )


@dataclass(frozen=True)
class Sent:
    """A signed command as published: ``payload`` is replayed byte for byte."""

    id: str
    type: str
    payload: bytes


class ServerSide:
    """The server's side of one locker on the broker: signs and publishes ``down/cmd``, watches
    ``up/state`` to know when the locker's sync link is up."""

    def __init__(self, broker: MosquittoTestBroker, key: SigningKey) -> None:
        self.key = key
        self.client: MqttTestClient = broker.server_client(client_id="crash-test-server")
        self.client.subscribe(topic(DEVICE_ID, "up/state"))
        self._online_boots: set[int] = set()

    def close(self) -> None:
        self.client.disconnect()

    def send(self, type_: str, args: Mapping[str, Any]) -> Sent:
        command_id = new_command_id()
        payload = sign_command(
            self.key,
            device_id=DEVICE_ID,
            type=type_,
            args=args,
            now=time.time(),
            ttl_s=600,
            command_id=command_id,
        )
        sent = Sent(command_id, type_, payload)
        self.publish(sent)
        return sent

    def publish(self, sent: Sent) -> None:
        self.client.publish(topic(DEVICE_ID, "down/cmd"), sent.payload, qos=1)

    def wait_online(self, rig: LockerRig) -> None:
        """Wait for ``up/state`` online from the child's current boot: its ``down/cmd``
        subscription is then in place (the agent subscribes before it says it is online)."""
        boot = rig.boot()

        def online() -> bool:
            with contextlib.suppress(queue.Empty):
                while True:
                    message = self.client.messages.get_nowait()
                    state = json.loads(message.payload)
                    if state.get("online"):
                        self._online_boots.add(int(state["boot"]))
            return boot in self._online_boots

        wait_for(online, f"the locker (boot {boot}) to be online", rig=rig)
