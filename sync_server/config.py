"""The server's configuration file (TOML) for ``linli server run --config FILE``.

Validated once at start: an unknown key, a missing file or a bad value stops the server with a
message naming the key (CONVENTIONS: Klipper). Relative paths are relative to the file's directory.
Secrets (the broker password, the signing key) are files the config names, never inline.

```toml
site_name = "幸福社区"
public_url = "https://linli.example.cn"      # the links residents get by SMS

[database]
url = "sqlite:///var/lib/linli/server.db"

[broker]
host = "mqtt.site01.example.cn"
port = 8883
ca = "site/ca.crt"
user = "linli-server"
password_file = "/etc/linli/server-broker-password"

[http]
host = "0.0.0.0"
port = 8080

[signing]                                    # signs commands and credentials
key = "/etc/linli/server-signing.pem"
kid = "srv-1"
verify_keys = { kiosk-c1 = "keys/kiosk-c1.pem" }  # certificates signed by kiosks

[dispatch]
interval_s = 5
ack_timeout_s = 300

[notify]                                     # docs/notifications.md

[enrollment]                                 # docs/provisioning.md: devices' first boot
ca_cert = "site/enroll-ca.crt"
ca_key = "site/enroll-ca.key"
chain = ["site/ca.crt"]
```
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sync_server.errors import ServerError
from sync_server.notify.settings import NotificationSettings

__all__ = ["ServerConfig", "ServerConfigError", "load_server_config"]


class ServerConfigError(ServerError, ValueError):
    """The server configuration file is missing, unreadable or invalid."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatabaseSection(_Section):
    url: str = "sqlite:///linli-server.db"


class BrokerSection(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8883
    ca: Path
    user: str = Field(min_length=1)
    password_file: Path
    client_id: str | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30


class HttpSection(_Section):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080


class SigningSection(_Section):
    key: Path
    kid: str = Field(min_length=1, max_length=64)
    verify_keys: dict[str, Path] = Field(default_factory=dict)
    """More public keys (key id -> PEM) the certificate page accepts: the kiosks' certificate
    keys, and server keys rotated out."""


class DispatchSection(_Section):
    interval_s: Annotated[float, Field(gt=0, le=3600)] = 5.0
    ack_timeout_s: Annotated[float, Field(gt=0, le=86_400)] = 300.0
    escalate_margin_s: Annotated[float, Field(ge=0, le=86_400)] = 1800.0
    escalate_after_s: Annotated[float, Field(gt=0, le=7 * 86_400)] = 4 * 3600.0
    remind_before_s: Annotated[float, Field(ge=0, le=7 * 86_400)] = 3600.0
    collect_remind_after_s: Annotated[float, Field(gt=0, le=60 * 86_400)] = 3 * 86_400.0


class EnrollmentSection(_Section):
    """The enrollment CA that certifies device keys at first boot (docs/provisioning.md)."""

    ca_cert: Path
    ca_key: Path
    chain: list[Path] = Field(default_factory=list)
    """Certificates above the enrollment CA (the site CA), handed to devices with theirs."""


class ServerConfig(_Section):
    """The whole file; ``path`` is where it was read from."""

    site_name: str = "邻里社区服务"
    public_url: str = "http://127.0.0.1:8080"
    database: DatabaseSection = Field(default_factory=DatabaseSection)
    broker: BrokerSection
    http: HttpSection = Field(default_factory=HttpSection)
    signing: SigningSection
    dispatch: DispatchSection = Field(default_factory=DispatchSection)
    notify: NotificationSettings = Field(default_factory=NotificationSettings)
    enrollment: EnrollmentSection | None = None


def _resolve(base: Path, raw: dict[str, Any]) -> dict[str, Any]:
    for section, key in (("broker", "ca"), ("broker", "password_file"), ("signing", "key")):
        value = raw.get(section, {}).get(key)
        if isinstance(value, str) and not Path(value).is_absolute():
            raw[section][key] = str(base / value)
    extra_keys = raw.get("signing", {}).get("verify_keys", {})
    if isinstance(extra_keys, dict):
        for kid, value in extra_keys.items():
            if isinstance(value, str) and not Path(value).is_absolute():
                extra_keys[kid] = str(base / value)
    enrollment = raw.get("enrollment", {})
    if isinstance(enrollment, dict):
        for key in ("ca_cert", "ca_key"):
            value = enrollment.get(key)
            if isinstance(value, str) and not Path(value).is_absolute():
                enrollment[key] = str(base / value)
        chain = enrollment.get("chain")
        if isinstance(chain, list):
            enrollment["chain"] = [
                str(base / v) if isinstance(v, str) and not Path(v).is_absolute() else v
                for v in chain
            ]
    notify = raw.get("notify", {})
    for section, key in (
        ("sms_gateway", "api_key_file"),
        ("sms_gateway", "api_secret_file"),
        ("wechat_template", "secret_file"),
    ):
        value = notify.get(section, {}).get(key)
        if isinstance(value, str) and value and not Path(value).is_absolute():
            notify[section][key] = str(base / value)
    return raw


def load_server_config(path: str | Path) -> ServerConfig:
    """Read and validate ``path``; every file it names must exist."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ServerConfigError(f"{path}: cannot read the server config ({err.strerror})") from err
    except tomllib.TOMLDecodeError as err:
        raise ServerConfigError(f"{path}: not valid TOML: {err}") from err
    try:
        config = ServerConfig.model_validate(_resolve(path.parent, raw))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ServerConfigError(f"{path}: {where}: {first['msg']}") from err
    files = [
        ("broker.ca", config.broker.ca),
        ("broker.password_file", config.broker.password_file),
        ("signing.key", config.signing.key),
        *((f"signing.verify_keys.{kid}", p) for kid, p in config.signing.verify_keys.items()),
    ]
    if config.enrollment is not None:
        files += [
            ("enrollment.ca_cert", config.enrollment.ca_cert),
            ("enrollment.ca_key", config.enrollment.ca_key),
            *((f"enrollment.chain[{i}]", p) for i, p in enumerate(config.enrollment.chain)),
        ]
    for what, file in files:
        if not file.is_file():
            raise ServerConfigError(f"{path}: {what}: no such file {file}")
    return config
