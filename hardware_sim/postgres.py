"""A private, real PostgreSQL cluster for tests and development (Debian's ``postgresql`` package).

:class:`PostgresTestServer` runs ``initdb`` into a temporary directory and starts ``postgres`` on a
unix socket only (``listen_addresses=''``), so it never touches a system cluster or a TCP port. As
root it runs as the ``postgres`` user (``initdb`` refuses root). ``create_database(name)`` returns a
SQLAlchemy URL for ``sync_server.db.make_engine``.

The cluster lives in ``/dev/shm`` (RAM) unless ``memory=False`` or there is none: on this machine's
disk ``CREATE DATABASE`` took 0.3 s even with ``fsync=off``, against 0.025 s in RAM, and the test
suite creates a database for every PostgreSQL test.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from device.errors import DeviceError, DeviceUnavailableError
from hardware_sim.processes import free_tcp_port

__all__ = ["INSTALL_HINT", "PostgresTestServer", "postgres_bindir"]

log = logging.getLogger(__name__)

SHM = Path("/dev/shm")  # noqa: S108 -- only a parent for mkdtemp, which makes a private 0700 dir

INSTALL_HINT = "install with: apt-get install postgresql (scripts/bootstrap.sh)"
SUPERUSER = "postgres"
DEBIAN_ROOT = Path("/usr/lib/postgresql")
"""Debian installs each major version's server programs in DEBIAN_ROOT/VERSION/bin."""
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def postgres_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres`` (newest Debian version first)."""
    candidates = sorted(
        DEBIAN_ROOT.glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for bindir in candidates:
        if (bindir / "initdb").exists() and (bindir / "postgres").exists():
            return bindir
    raise DeviceUnavailableError(
        f"PostgreSQL server programs (initdb, postgres) not found; {INSTALL_HINT}"
    )


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie no longer holds anything)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class PostgresTestServer:
    """Our own PostgreSQL cluster; ``start()`` after ``stop()``/``kill()`` keeps data and port."""

    def __init__(
        self, root: Path | None = None, *, fsync: bool = False, memory: bool = True
    ) -> None:
        """``root``: where the cluster lives (default: a new directory in ``/dev/shm`` if
        ``memory`` and it is writable, else in the temporary directory)."""
        self.bindir = postgres_bindir()
        in_memory = memory and SHM.is_dir() and os.access(SHM, os.W_OK)
        self.root = root or Path(
            tempfile.mkdtemp(prefix="linli-postgres-", dir=SHM if in_memory else None)
        )
        self.data_dir = self.root / "data"
        self.socket_dir = self.root / "sock"
        self.log_file = self.root / "postgres.log"
        self.port = free_tcp_port()  # only names the socket file (.s.PGSQL.PORT); no TCP
        self.fsync = fsync
        self.process: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    def __enter__(self) -> PostgresTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def _command(self, program: str, *args: str) -> list[str]:
        argv = [str(self.bindir / program), *args]
        if self._as_postgres:
            return ["runuser", "-u", SUPERUSER, "--", *argv]
        return argv

    def _prepare(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self._as_postgres:
            try:
                owner = pwd.getpwnam(SUPERUSER)
            except KeyError as err:
                raise DeviceUnavailableError(f"no '{SUPERUSER}' user; {INSTALL_HINT}") from err
            for path in (self.root, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        if (self.data_dir / "PG_VERSION").exists():
            return
        # Trust auth is safe here: the only way in is our own socket directory.
        options = ["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"]
        done = subprocess.run(  # noqa: S603 -- fixed arguments, no shell
            self._command("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, *options),
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise DeviceError(f"initdb failed in {self.data_dir}: {done.stderr.strip()[-1500:]}")

    def start(self, timeout_s: float = 30.0) -> None:
        """Start (or restart) the cluster and wait until it accepts connections."""
        if self.running:
            return
        self._prepare()
        settings = [
            "listen_addresses=",
            f"fsync={'on' if self.fsync else 'off'}",
            "synchronous_commit=on",
            "max_connections=200",
        ]
        args = ["-D", str(self.data_dir), "-k", str(self.socket_dir), "-p", str(self.port)]
        for setting in settings:
            args += ["-c", setting]
        with self.log_file.open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 -- fixed arguments, no shell
                self._command("postgres", *args), stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise DeviceUnavailableError(f"postgres exited at start; {self._log_tail()}")
            if self.answers():
                log.info("private PostgreSQL ready in %s (port %d)", self.socket_dir, self.port)
                return
            time.sleep(0.05)
        self.kill()
        raise DeviceUnavailableError(f"postgres did not start in {timeout_s}s; {self._log_tail()}")

    def _log_tail(self) -> str:
        text = ""
        if self.log_file.exists():
            text = self.log_file.read_text(encoding="utf-8", errors="replace")[-1500:]
        return f"log {self.log_file}:\n{text}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _conninfo(self, dbname: str) -> str:
        return f"host={self.socket_dir} port={self.port} user={SUPERUSER} dbname={dbname}"

    def answers(self) -> bool:
        """True when the cluster accepts a connection and runs a query."""
        try:
            with psycopg.connect(self._conninfo("postgres"), connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def url(self, dbname: str) -> str:
        """The SQLAlchemy URL of database ``dbname`` on this cluster (unix socket)."""
        return f"postgresql+psycopg://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def create_database(self, name: str, template: str | None = None) -> str:
        """Create database ``name`` (optionally as a copy of ``template``) and return its URL."""
        for value in (name, template):
            if value is not None and not _NAME.fullmatch(value):
                raise ValueError(f"database name {value!r}: use 1-63 of a-z 0-9 _")
        sql = f'CREATE DATABASE "{name}"'
        if template is not None:
            sql += f' TEMPLATE "{template}"'
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            conn.execute(sql.encode())
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing other sessions on it first."""
        if not _NAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use 1-63 of a-z 0-9 _")
        with psycopg.connect(self._conninfo("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())

    def _postmaster_pid(self) -> int | None:
        pid_file = self.data_dir / "postmaster.pid"
        try:
            return int(pid_file.read_text(encoding="ascii").split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _signal(self, signum: signal.Signals) -> None:
        # The child we started may be runuser: signal the postmaster it started, by its pid file.
        pid = self._postmaster_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def stop(self, timeout_s: float = 30.0, *, immediate: bool = False) -> None:
        """Fast shutdown (SIGINT): sessions are closed, everything committed stays, after a
        shutdown checkpoint. ``immediate`` (SIGQUIT) skips the checkpoint: the next start
        recovers from the WAL; for a cluster about to be thrown away."""
        if self.process is None:
            return
        self._signal(signal.SIGQUIT if immediate else signal.SIGINT)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
        self.process = None

    def kill(self, timeout_s: float = 10.0) -> None:
        """SIGKILL the postmaster: a crash; the next start runs crash recovery."""
        if self.process is None:
            return
        pid = self._postmaster_pid()
        backends = _children(pid) if pid is not None else []
        self._signal(signal.SIGKILL)
        # runuser (if any) reaps the postmaster and exits; its backends notice and exit too,
        # and the next start needs them gone (they hold the shared memory).
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.process = None
        deadline = time.monotonic() + timeout_s
        while any(_alive(child) for child in backends) and time.monotonic() < deadline:
            time.sleep(0.05)

    def cleanup(self) -> None:
        """Stop and remove the cluster's directory. The stop is immediate: a shutdown checkpoint
        would only write out what is deleted next."""
        self.stop(immediate=True)
        shutil.rmtree(self.root, ignore_errors=True)
