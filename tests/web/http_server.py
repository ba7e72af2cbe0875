"""The web app behind a real uvicorn on a free port, for tests that need real HTTP.

Starlette's TestClient runs the app in-process, but percent-decodes a request path twice
(``%2596`` arrives as a byte) and accepts header values no HTTP parser would: the URL form of
the certificate check and the schemathesis run go through uvicorn, as production does.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from hardware_sim.processes import reserved_tcp_port


@contextlib.contextmanager
def served(app: Any, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app`` on 127.0.0.1 while the block runs; yields the base URL."""
    port = reserved_tcp_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
