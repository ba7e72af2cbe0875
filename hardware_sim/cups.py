"""A private, real ``cupsd`` for tests and development, with a fault-injecting printer queue.

:class:`CupsTestServer` starts its own ``cupsd -f`` on a private domain socket (it never touches a
system cupsd), installs the ``linli-sim`` backend (``hardware_sim/cups_backend/linli-sim``) into
``/usr/lib/cups/backend`` and creates raw queues whose device is that backend. The backend reads a
control file, so a test makes the printer run out of paper, hang or fail through the REAL cupsd.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Literal

import cups

from device.errors import DeviceError, DeviceUnavailableError
from hardware_sim.processes import stop_process

log = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).resolve().parent / "cups_backend" / "linli-sim"
BACKEND_DIR = Path("/usr/lib/cups/backend")
SimMode = Literal["ok", "paper-out", "hang", "fail"]
INSTALL_HINT = "install with: apt-get install cups cups-client cups-bsd (scripts/bootstrap.sh)"


class SimQueue:
    """A queue whose printer is the ``linli-sim`` backend; ``mode`` switches its behaviour."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.out_dir = directory / "out"

    def set_mode(self, mode: SimMode) -> None:
        """How the next job behaves (ok / paper-out / hang / fail)."""
        (self.directory / "mode").write_text(mode + "\n", encoding="ascii")

    def outputs(self) -> list[Path]:
        """PDFs the printer "printed", oldest job first."""
        if not self.out_dir.exists():
            return []
        return sorted(self.out_dir.glob("*.pdf"), key=lambda p: p.stat().st_mtime)

    def wait_for_output(self, count: int, timeout_s: float = 10.0) -> list[Path]:
        """Wait until ``count`` jobs came out; a DeviceError if they do not."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = self.outputs()
            if len(found) >= count:
                return found
            time.sleep(0.05)
        raise DeviceError(f"{self.name}: expected {count} printed jobs, got {len(self.outputs())}")


class CupsTestServer:
    """A cupsd of our own (root needed); ``socket`` is the address for pycups / ``lp -h``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="linli-cupsd-"))
        self.socket = str(self.root / "cups.sock")
        self.process: subprocess.Popen[bytes] | None = None
        self.queues: dict[str, SimQueue] = {}
        self._pdf_configs: list[Path] = []

    def __enter__(self) -> CupsTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.remove_pdf_configs()

    def _write_config(self) -> None:
        r = self.root
        for sub in ("etc/ppd", "spool/tmp", "cache", "state", "log", "tmp", "queues"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        # Filters run as user lp: they must reach the spool and write temporary files.
        r.chmod(0o755)
        (r / "tmp").chmod(0o1777)
        (r / "etc" / "cups-files.conf").write_text(
            f"ServerRoot {r}/etc\nRequestRoot {r}/spool\nCacheDir {r}/cache\n"
            f"StateDir {r}/state\nTempDir {r}/tmp\nServerBin"  # noqa: S108 -- our own dir
            f"  /usr/lib/cups\n"
            f"DataDir /usr/share/cups\nAccessLog {r}/log/access_log\n"
            f"ErrorLog {r}/log/error_log\nPageLog {r}/log/page_log\nPrintcap {r}/printcap\n"
            "SystemGroup root lpadmin\nFileDevice No\n",
            encoding="ascii",
        )
        (r / "etc" / "cupsd.conf").write_text(
            f"Listen {self.socket}\nLogLevel info\nBrowsing No\nWebInterface No\n"
            "PreserveJobHistory Yes\nJobKillDelay 1\n"
            "<Location />\n  Order allow,deny\n  Allow all\n</Location>\n"
            "<Policy default>\n  <Limit All>\n    Order deny,allow\n  </Limit>\n</Policy>\n",
            encoding="ascii",
        )

    def start(self) -> None:
        """Start cupsd (again) and wait until it answers."""
        binary = shutil.which("cupsd") or "/usr/sbin/cupsd"
        if not Path(binary).exists():
            raise DeviceUnavailableError(f"cupsd is not installed; {INSTALL_HINT}")
        self._install_backend()
        self._write_config()
        etc = self.root / "etc"
        with (self.root / "log" / "stdout").open("ab") as out:
            self.process = subprocess.Popen(  # noqa: S603 -- fixed arguments, no shell
                [binary, "-f", "-c", str(etc / "cupsd.conf"), "-s", str(etc / "cups-files.conf")],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.answers():
                return
            time.sleep(0.05)
        raise DeviceUnavailableError(f"cupsd did not start; see {self.root}/log/error_log")

    def answers(self) -> bool:
        """True when our cupsd accepts an IPP request."""
        try:
            cups.Connection(host=self.socket).getPrinters()
        except (RuntimeError, cups.IPPError, cups.HTTPError):
            return False
        return True

    def stop(self) -> None:
        """Stop our cupsd (jobs it holds are kept on disk, as a real restart would)."""
        if self.process is None:
            return
        stop_process(self.process)
        self.process = None

    def _install_backend(self) -> None:
        target = BACKEND_DIR / "linli-sim"
        if not BACKEND_DIR.is_dir():
            raise DeviceUnavailableError(f"{BACKEND_DIR} missing; {INSTALL_HINT}")
        if not target.exists() or target.read_bytes() != BACKEND_SOURCE.read_bytes():
            shutil.copyfile(BACKEND_SOURCE, target)
        # 0700: CUPS runs it as root, so it can write into the test's directory.
        target.chmod(0o700)

    def _lp(self, tool: str, *args: str, check: bool = True) -> int:
        done = subprocess.run(  # noqa: S603 -- CUPS tools, no shell
            [tool, "-h", self.socket, *args], capture_output=True, text=True, check=False
        )
        if check and done.returncode != 0:
            raise DeviceError(f"{tool} {' '.join(args)}: {done.stderr.strip()}")
        return done.returncode

    def add_sim_queue(self, name: str) -> SimQueue:
        """A raw queue on the ``linli-sim`` backend; jobs abort (not stop the queue) on fail."""
        directory = self.root / "queues" / name
        directory.mkdir(parents=True, exist_ok=True)
        queue = SimQueue(name, directory)
        queue.set_mode("ok")
        self._lp("lpadmin", "-p", name, "-E", "-v", f"linli-sim:{directory}")
        self.queues[name] = queue
        return queue

    def add_pdf_queue(self, name: str) -> SimQueue:
        """A cups-pdf queue (printer-driver-cups-pdf) writing into its own directory.

        cups-pdf reads ``/etc/cups/cups-pdf-NAME.conf`` for device ``cups-pdf:/NAME``; that file is
        written here and removed by :meth:`remove_pdf_configs`.
        """
        directory = self.root / "queues" / name
        (directory / "out").mkdir(parents=True, exist_ok=True)
        token = f"linli{os.getpid()}{name}"
        conf = Path(f"/etc/cups/cups-pdf-{token}.conf")
        conf.write_text(
            f"Out {directory}/out\nAnonDirName {directory}/out\nSpool {directory}/spool\n"
            f"Log {directory}/log\nGrp root\nLabel 0\n",
            encoding="ascii",
        )
        self._pdf_configs.append(conf)
        ppd = "lsb/usr/cups-pdf/CUPS-PDF_noopt.ppd"
        # cups-pdf takes PostScript: CUPS turns the PDF into PS first. Its default (Ghostscript)
        # drops the CJK ToUnicode map, so the output's text cannot be checked; pdftocairo keeps it.
        self._lp("lpadmin", "-p", name, "-E", "-v", f"cups-pdf:/{token}", "-m", ppd,
                 "-o", "pdftops-renderer-default=pdftocairo")  # fmt: skip
        queue = SimQueue(name, directory)
        self.queues[name] = queue
        return queue

    def remove_pdf_configs(self) -> None:
        for conf in self._pdf_configs:
            conf.unlink(missing_ok=True)
        self._pdf_configs.clear()

    def disable(self, name: str, reason: str = "stopped by test") -> None:
        """``cupsdisable``: the queue stops printing (jobs wait)."""
        self._lp("cupsdisable", "-r", reason, name)

    def enable(self, name: str) -> None:
        """``cupsenable``: what a technician runs after fixing the printer."""
        self._lp("cupsenable", name)

    def cancel_all(self, name: str) -> None:
        """Cancel every job on ``name`` (test clean-up)."""
        self._lp("cancel", "-a", name, check=False)
