"""The ``[notify]`` settings: the example in docs/notifications.md, defaults, errors that name the
key without echoing a secret, secret files, and adapters built from settings doing real I/O."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sync_server.notify import (
    NotificationSettings,
    NotifyConfigError,
    RecordingNotifier,
    SmsGatewayNotifier,
    WeChatTemplateNotifier,
    build_notifiers,
    parse_notify_settings,
    render,
)
from tests.notify.conftest import HttpSim, WeChatSim

DOC = Path(__file__).resolve().parents[2] / "docs" / "notifications.md"
PARAMS = {
    "service": "高龄津贴申领",
    "locker": "幸福里3号柜",
    "case_no": "C20240001",
    "link": "https://l.example.cn/c/Ab3",
}


def doc_example() -> dict[str, Any]:
    """The TOML block of the docs page that configures ``[notify]``."""
    blocks = re.findall(r"```toml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    (config,) = [b for b in blocks if b.startswith("[notify]")]
    notify: dict[str, Any] = tomllib.loads(config)["notify"]
    return notify


def with_secret_files(tmp_path: Path, data: dict[str, Any]) -> dict[str, Any]:
    for section, key in (
        ("sms_gateway", "api_key_file"),
        ("sms_gateway", "api_secret_file"),
        ("wechat_template", "secret_file"),
    ):
        path = tmp_path / key
        path.write_text(f"value-of-{key}\n", encoding="utf-8")
        data[section][key] = str(path)
    return data


def test_the_documented_example_is_valid_and_builds(tmp_path: Path) -> None:
    settings = parse_notify_settings(doc_example())
    assert settings.sms == "gateway"
    assert settings.retry.max_attempts == 5
    assert settings.retry.delay(1) == 60
    assert settings.retry.delay(3) == 240
    assert settings.retry.delay(10) == 3600
    assert settings.wechat_template is not None
    assert settings.wechat_template.fields["case.result_ready"] == {
        "thing1": "service",
        "thing2": "locker",
    }
    notifiers = build_notifiers(parse_notify_settings(with_secret_files(tmp_path, doc_example())))
    try:
        assert isinstance(notifiers["sms"], SmsGatewayNotifier)
        assert isinstance(notifiers["wechat"], WeChatTemplateNotifier)
    finally:
        for notifier in notifiers.values():
            notifier.close()


def test_defaults_record_everything() -> None:
    settings = parse_notify_settings({})
    assert settings == NotificationSettings()
    notifiers = build_notifiers(settings)
    assert set(notifiers) == {"sms", "wechat"}
    assert all(isinstance(n, RecordingNotifier) for n in notifiers.values())
    assert [n.channel for n in notifiers.values()] == ["sms", "wechat"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"smss": "gateway"}, "notify.smss: unknown key"),
        ({"sms": "gateway", "sms_gateway": None}, "needs a \\[notify.sms_gateway\\] section"),
        ({"wechat": "push"}, "wechat: Input should be 'record' or 'template'"),
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts"),
        ({"retry": {"backof_s": 1}}, "retry.backof_s: unknown key"),
        ({"sms_gateway": {"url": "gw.example.cn"}}, "sms_gateway.url"),
        ({"sms_gateway": {"api_key": "k", "api_key_file": "/x"}}, "set api_key_file or api_key"),
        ({"wechat_template": {"secret": "s", "secret_file": "/x"}}, "exactly one of secret_file"),
        (
            {"retry": {"stale_after_s": 300}, "sms_gateway": {"timeout_s": 30}},
            "stale_after_s must be at least 12 times",
        ),
    ],
)
def test_errors_name_the_key(change: dict[str, Any], words: str) -> None:
    data = doc_example()
    for key, value in change.items():
        if value is None:
            data.pop(key)
        elif isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    with pytest.raises(NotifyConfigError, match=words):
        parse_notify_settings(data, "notify")


def test_a_secret_is_never_echoed() -> None:
    data = doc_example()
    data["wechat_template"] = {"appid": "wx1", "secret": ["hunter2-secret"]}
    with pytest.raises(NotifyConfigError, match=r"wechat_template\.secret") as err:
        parse_notify_settings(data)
    assert "hunter2" not in str(err.value)
    data["wechat_template"] = {"appid": "wx1", "secret": "hunter2-secret", "secret_file": "/x"}
    with pytest.raises(NotifyConfigError, match="exactly one") as err:
        parse_notify_settings(data)
    assert "hunter2" not in str(err.value)
    assert "hunter2" not in repr(
        parse_notify_settings({"wechat_template": {"appid": "wx1", "secret": "hunter2"}})
    )


def test_catalogue_names_are_checked_when_building(tmp_path: Path) -> None:
    data = with_secret_files(tmp_path, doc_example())
    data["wechat_template"]["template_ids"] = {"case.ready": "x"}
    data["wechat_template"]["fields"] = {}
    with pytest.raises(NotifyConfigError, match="not a catalogue template"):
        build_notifiers(parse_notify_settings(data))


def test_unreadable_or_empty_secret_files(tmp_path: Path) -> None:
    data = with_secret_files(tmp_path, doc_example())
    data["wechat_template"]["secret_file"] = str(tmp_path / "missing")
    with pytest.raises(NotifyConfigError, match=r"wechat_template\.secret_file: cannot read"):
        build_notifiers(parse_notify_settings(data))
    (tmp_path / "empty").write_text("\n")
    data["wechat_template"]["secret_file"] = str(tmp_path / "empty")
    with pytest.raises(NotifyConfigError, match="empty"):
        build_notifiers(parse_notify_settings(data))


def test_built_adapters_use_the_secret_files(
    tmp_path: Path, http_sim: HttpSim, wechat_sim: WeChatSim
) -> None:
    data = with_secret_files(tmp_path, doc_example())
    data["sms_gateway"]["url"] = http_sim.url + "/sms"
    data["wechat_template"]["base_url"] = http_sim.url
    notifiers = build_notifiers(parse_notify_settings(data))
    try:
        text = render("case.result_ready", PARAMS)
        notifiers["sms"].send("13812345678", "case.result_ready", text, PARAMS)
        notifiers["wechat"].send("oUpF8uMuAJO_M2pxb1Q9zNjWeS6o", "case.result_ready", text, PARAMS)
    finally:
        for notifier in notifiers.values():
            notifier.close()
    sms = http_sim.requests("/sms")[0]
    assert sms.headers["x-api-key"] == "value-of-api_key_file"
    assert sms.json()["password"] == "value-of-api_secret_file"
    assert sms.json()["msg"].startswith("【邻里】您办理的")
    assert wechat_sim.token_requests()[0].query["secret"] == "value-of-secret_file"
    body = wechat_sim.sends()[0].json()
    assert body["template_id"] == "Xj3kQ_result_ready_template_id"
    assert body["data"] == {"thing1": {"value": "高龄津贴申领"}, "thing2": {"value": "幸福里3号柜"}}
