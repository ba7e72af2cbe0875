"""What the web app needs from the rest of the server, passed in (no globals, no hidden state).

Everything a second server process would need lives in the database; this holds handles only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from device.credential import SigningKey

CommandSender = Callable[[str, str, Mapping[str, Any]], str | None]
"""``send(device, type, args) -> command id``, or None when it could not be sent (offline)."""


@dataclass
class WebContext:
    """Handles for the web app: the database, the credential key, how to reach devices."""

    engine: Engine
    signing_key: SigningKey
    send_command: CommandSender
    clock: Callable[[], float] = time.time
    site_name: str = "邻里社区服务"
    extra: dict[str, Any] = field(default_factory=dict)
