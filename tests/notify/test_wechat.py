"""The WeChat template-message adapter against a local HTTP server speaking the WeChat API shape:
token caching and refresh, the message body, and errcode classification."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from hardware_sim.processes import free_tcp_port
from sync_server.notify import (
    InvalidRecipientError,
    NotifyConfigError,
    PermanentDeliveryError,
    TemporaryDeliveryError,
    WeChatTemplateNotifier,
    render,
)
from tests.notify.conftest import FakeClock, Reply, WeChatSim

OPENID = "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
OPENID_2 = "oUpF8uAbCdE_M2pxb1Q9zNjWeS7p"
SECRET = "3f1e9c0a7b5d4e2f8a6c"
PARAMS = {
    "service": "高龄津贴申领",
    "locker": "幸福里3号柜",
    "case_no": "C20240001",
    "link": "https://l.example.cn/c/Ab3",
}
TEXT = render("case.result_ready", PARAMS)
IDS = {"case.result_ready": "tpl-RESULT", "subsidy.reminder": "tpl-SUBSIDY"}


@pytest.fixture
def make_wechat(wechat_sim: WeChatSim) -> Iterator[Any]:
    made: list[WeChatTemplateNotifier] = []

    def make(**kwargs: Any) -> WeChatTemplateNotifier:
        kwargs.setdefault("base_url", wechat_sim.sim.url)
        kwargs.setdefault("template_ids", IDS)
        notifier = WeChatTemplateNotifier("wx1234567890abcdef", SECRET, **kwargs)
        made.append(notifier)
        return notifier

    yield make
    for notifier in made:
        notifier.close()


def send(notifier: WeChatTemplateNotifier, openid: str = OPENID) -> None:
    notifier.send(openid, "case.result_ready", TEXT, PARAMS)


def test_token_fetched_once_and_message_has_the_api_shape(
    wechat_sim: WeChatSim, make_wechat: Any
) -> None:
    notifier = make_wechat()
    send(notifier)
    send(notifier, OPENID_2)
    (token_request,) = wechat_sim.token_requests()
    assert token_request.method == "GET"
    assert token_request.query == {
        "grant_type": "client_credential",
        "appid": "wx1234567890abcdef",
        "secret": SECRET,
    }
    first, second = wechat_sim.sends()
    assert first.method == "POST"
    assert first.query == {"access_token": "TOKEN-1"}
    assert second.query == {"access_token": "TOKEN-1"}
    body = first.json()
    assert body["touser"] == OPENID
    assert body["template_id"] == "tpl-RESULT"
    assert body["url"] == PARAMS["link"]
    assert body["data"] == {k: {"value": v} for k, v in PARAMS.items()}
    assert len(body["client_msg_id"]) == 32
    assert second.json()["client_msg_id"] != body["client_msg_id"]
    assert notifier.token_fetches == 1


def test_fields_map_wechat_keys_to_params(wechat_sim: WeChatSim, make_wechat: Any) -> None:
    notifier = make_wechat(
        fields={"case.result_ready": {"thing1": "service", "thing2": "locker"}},
        client_msg_id=False,
    )
    send(notifier)
    body = wechat_sim.sends()[0].json()
    assert body["data"] == {"thing1": {"value": "高龄津贴申领"}, "thing2": {"value": "幸福里3号柜"}}
    assert "client_msg_id" not in body


def test_token_is_replaced_shortly_before_it_expires(
    wechat_sim: WeChatSim, make_wechat: Any
) -> None:
    clock = FakeClock(0.0)
    notifier = make_wechat(clock=clock)
    send(notifier)
    clock.advance(7200 - 301)  # inside the 300 s margin: still cached
    send(notifier)
    assert notifier.token_fetches == 1
    clock.advance(2)
    send(notifier)
    assert notifier.token_fetches == 2
    assert wechat_sim.sends()[-1].query == {"access_token": "TOKEN-2"}


def test_invalid_token_is_refreshed_once_and_resent(
    wechat_sim: WeChatSim, make_wechat: Any
) -> None:
    notifier = make_wechat()
    send(notifier)  # caches TOKEN-1
    wechat_sim.sim.script(
        WeChatSim.SEND, Reply(body={"errcode": 40001, "errmsg": "invalid credential"})
    )
    send(notifier)
    sends = wechat_sim.sends()
    assert [s.query["access_token"] for s in sends] == ["TOKEN-1", "TOKEN-1", "TOKEN-2"]
    assert sends[1].json() == sends[2].json()
    assert notifier.token_fetches == 2


def test_a_token_refused_twice_is_temporary(wechat_sim: WeChatSim, make_wechat: Any) -> None:
    expired = Reply(body={"errcode": 42001, "errmsg": "access_token expired"})
    wechat_sim.sim.script(WeChatSim.SEND, expired, expired)
    with pytest.raises(TemporaryDeliveryError, match="freshly fetched access token"):
        send(make_wechat())
    assert len(wechat_sim.sends()) == 2


@pytest.mark.parametrize(
    ("errcode", "kind", "words"),
    [
        (-1, TemporaryDeliveryError, "system busy"),
        (45009, TemporaryDeliveryError, "quota"),
        (43004, PermanentDeliveryError, "does not follow"),
        (40003, InvalidRecipientError, "not an openid"),
        (40037, PermanentDeliveryError, "invalid template_id"),
        (47003, PermanentDeliveryError, "field value"),
        (99999, PermanentDeliveryError, "errcode 99999 \\(something odd\\)"),
    ],
)
def test_send_errcodes_are_classified(
    wechat_sim: WeChatSim, make_wechat: Any, errcode: int, kind: type[Exception], words: str
) -> None:
    wechat_sim.sim.script(
        WeChatSim.SEND, Reply(body={"errcode": errcode, "errmsg": "something odd"})
    )
    with pytest.raises(kind, match=words) as err:
        send(make_wechat())
    assert err.value.retryable == (kind is TemporaryDeliveryError)  # type: ignore[attr-defined]
    assert OPENID not in str(err.value)


def test_43004_is_permanent_not_a_bad_recipient(wechat_sim: WeChatSim, make_wechat: Any) -> None:
    wechat_sim.sim.script(
        WeChatSim.SEND, Reply(body={"errcode": 43004, "errmsg": "require subscribe"})
    )
    with pytest.raises(PermanentDeliveryError) as err:
        send(make_wechat())
    assert not isinstance(err.value, InvalidRecipientError)


def test_token_request_refused_names_the_problem_not_the_secret(
    wechat_sim: WeChatSim, make_wechat: Any, caplog: pytest.LogCaptureFixture
) -> None:
    wechat_sim.sim.script(
        WeChatSim.TOKEN, Reply(body={"errcode": 40125, "errmsg": "invalid appsecret rid: 1"})
    )
    with caplog.at_level(logging.DEBUG), pytest.raises(PermanentDeliveryError) as err:
        send(make_wechat())
    assert "invalid app secret" in str(err.value)
    assert SECRET not in str(err.value)
    assert SECRET not in caplog.text
    assert wechat_sim.sends() == []


def test_busy_token_endpoint_is_temporary(wechat_sim: WeChatSim, make_wechat: Any) -> None:
    wechat_sim.sim.script(WeChatSim.TOKEN, Reply(body={"errcode": -1, "errmsg": "system error"}))
    with pytest.raises(TemporaryDeliveryError):
        send(make_wechat())
    send(make_wechat())  # the next call fetches again and goes through


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (Reply(502, "bad gateway"), TemporaryDeliveryError),
        (Reply(200, "not json"), PermanentDeliveryError),
        (Reply(200, {"errcode": "x"}), PermanentDeliveryError),
    ],
)
def test_http_level_failures(
    wechat_sim: WeChatSim, make_wechat: Any, reply: Reply, kind: type[Exception]
) -> None:
    wechat_sim.sim.script(WeChatSim.SEND, reply)
    with pytest.raises(kind):
        send(make_wechat())


def test_slow_api_times_out(wechat_sim: WeChatSim, make_wechat: Any) -> None:
    wechat_sim.sim.script(WeChatSim.SEND, Reply(body={"errcode": 0}, delay_s=1.5))
    with pytest.raises(TemporaryDeliveryError, match="did not answer"):
        send(make_wechat(timeout_s=0.3))


def test_unreachable_api_is_temporary(make_wechat: Any) -> None:
    notifier = make_wechat(base_url=f"http://127.0.0.1:{free_tcp_port()}", timeout_s=2)
    with pytest.raises(TemporaryDeliveryError, match="unreachable"):
        send(notifier)


def test_a_template_without_an_id_fails_without_a_request(
    wechat_sim: WeChatSim, make_wechat: Any
) -> None:
    with pytest.raises(
        PermanentDeliveryError, match=r"no WeChat template id configured for case\.overdue"
    ):
        make_wechat().send(
            OPENID, "case.overdue", "x", {"case_no": "1", "service": "s", "deadline": "d"}
        )
    assert wechat_sim.sim.requests() == []


@pytest.mark.parametrize("bad", ["13812345678", "o" * 70, "oUpF8uMu AJO_M2pxb1Q9zNjWeS6o"])
def test_a_bad_openid_is_refused(wechat_sim: WeChatSim, make_wechat: Any, bad: str) -> None:
    with pytest.raises(InvalidRecipientError):
        send(make_wechat(), bad)
    assert wechat_sim.sim.requests() == []


def test_concurrent_senders_share_one_token_fetch(wechat_sim: WeChatSim, make_wechat: Any) -> None:
    notifier = make_wechat()
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def worker() -> None:
        barrier.wait(timeout=10)
        try:
            send(notifier)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert errors == []
    assert len(wechat_sim.token_requests()) == 1
    assert len(wechat_sim.sends()) == 8


def test_no_secret_or_token_in_the_log(
    wechat_sim: WeChatSim, make_wechat: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        send(make_wechat())
    assert "HTTP Request" in caplog.text
    assert SECRET not in caplog.text
    assert "TOKEN-1" not in caplog.text
    assert OPENID not in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"template_ids": {"case.ready": "x"}}, "not a catalogue template"),
        ({"template_ids": {"case.overdue": ""}}, "empty"),
        ({"fields": {"case.overdue": {"thing1": "service"}}}, "has no template id"),
        ({"fields": {"case.result_ready": {"thing1": "servcie"}}}, "does not have.*servcie"),
        ({"base_url": "api.weixin.qq.com"}, "http:// or https://"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], words: str) -> None:
    kwargs.setdefault("template_ids", IDS)
    with pytest.raises(NotifyConfigError, match=words):
        WeChatTemplateNotifier("wx1", SECRET, **kwargs)


def test_repr_shows_no_secret(make_wechat: Any) -> None:
    assert SECRET not in repr(make_wechat())
