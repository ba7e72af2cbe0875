"""Web tests: the real FastAPI app over HTTP (Starlette's TestClient) on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from device.credential import SigningKey, generate_signing_key
from sync_server.web.app import create_app
from sync_server.web.context import WebContext
from tests.cases.conftest import NOW, site  # noqa: F401
from tests.server.conftest import backend, engine, migrated_url  # noqa: F401


class RecordingSender:
    """Records the commands the app sends instead of publishing them.

    These tests are about the HTTP side; the signed command's way through a real Mosquitto to a
    real locker is what tests/web_e2e covers. ``online=False`` is a server with no broker link.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[str, str, dict[str, Any]]] = []
        self.online = True

    def __call__(self, device: str, type: str, args: Mapping[str, Any]) -> str | None:
        if not self.online:
            return None
        self.sent.append((device, type, dict(args)))
        return f"{len(self.sent):032x}"


@pytest.fixture
def key() -> SigningKey:
    return generate_signing_key("srv-1")


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def client(site: Engine, key: SigningKey, sender: RecordingSender) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(
        WebContext(engine=site, signing_key=key, send_command=sender, clock=lambda: NOW)
    )
    with TestClient(app, base_url="http://linli.test") as c:
        yield c
