"""What the kiosk screen shows, as data: the session's states and the screens it asks a UI to draw.

The controller (:mod:`kiosk_ui.session`) never draws anything. It hands the UI a :class:`Screen`:
an id, a Chinese title and body, optional list items and a preview image, and the actions the
resident may touch. The UI renders that and calls ``session.touch(action.id, **action.kwargs())``
for the button pressed, so every word the resident reads is here, testable without Kivy.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field


class State(enum.Enum):
    """The kiosk session of DESIGN.md section 3, plus ``REFUSED`` for a card the kiosk cannot use.

    ``idle -> card_read -> identified -> service -> preview -> printing -> done -> idle``; every
    state goes back to ``IDLE`` after the idle timeout, wiping personal data.
    """

    IDLE = "idle"
    CARD_READ = "card_read"
    """A card was read and accepted; the resident record is being looked up (online)."""
    IDENTIFIED = "identified"
    """The resident is known (or known to have no record here): the service menu."""
    SERVICE = "service"
    """Inside one service: templates, status, applications, guide, notices."""
    PREVIEW = "preview"
    PRINTING = "printing"
    DONE = "done"
    REFUSED = "refused"
    """A card or a read the kiosk cannot use (expired, bad ID number, unreadable): nothing held."""


@dataclass(frozen=True)
class Action:
    """A button: ``id`` and ``args`` are what the UI passes back to ``touch``."""

    id: str
    label: str
    args: tuple[tuple[str, str], ...] = ()

    def kwargs(self) -> dict[str, str]:
        """The keyword arguments of ``session.touch(action.id, **action.kwargs())``."""
        return dict(self.args)

    def matches(self, action: str, args: Mapping[str, str]) -> bool:
        return self.id == action and dict(self.args) == dict(args)


def action(id: str, label: str, /, **args: str) -> Action:
    """An :class:`Action` with keyword arguments: ``action("template", "居住证明", name="x")``."""
    return Action(id, label, tuple(sorted(args.items())))


@dataclass(frozen=True)
class Item:
    """One line of a list (a template, a service of the guide, a notice, an application)."""

    title: str
    text: str = ""
    action: Action | None = None
    """What touching the line does (None: a line to read only)."""


@dataclass(frozen=True)
class Entry:
    """A text field the resident fills in with the on-screen keyboard.

    The UI shows a keyboard of ``keys`` and sends ``touch(submit.id, text=typed)``; the
    controller checks the text itself (a screen allows any text of at most ``max_length``
    characters, so a wrong one gets a clear error instead of an ignored touch).
    """

    label: str
    hint: str
    keys: str
    """The characters the keyboard offers, in order."""
    max_length: int
    submit: Action
    error: str = ""
    """Why the last text was not accepted (shown under the field)."""


@dataclass(frozen=True)
class Screen:
    """Everything the UI draws for one screen. ``repr`` never shows the texts (personal data)."""

    id: str
    state: State
    title: str
    body: str = ""
    items: tuple[Item, ...] = ()
    actions: tuple[Action, ...] = ()
    image: bytes | None = field(default=None, repr=False)
    """A PNG to show (the certificate preview)."""
    busy: bool = False
    """Work is running (show a spinner); only the actions listed are accepted meanwhile."""
    entry: Entry | None = None
    """A field to type into (the UI shows the on-screen keyboard)."""

    def offered(self) -> tuple[Action, ...]:
        """Every action the resident can touch here: the buttons and the list lines."""
        return self.actions + tuple(i.action for i in self.items if i.action is not None)

    def allows(self, action: str, args: Mapping[str, str]) -> bool:
        """Whether ``touch(action, **args)`` is one of this screen's actions (a stale or forged
        touch is not)."""
        entry = self.entry
        if entry is not None and action == entry.submit.id and set(args) == {"text"}:
            return len(args["text"]) <= entry.max_length
        return any(a.matches(action, args) for a in self.offered())

    def text(self) -> str:
        """All the words on the screen (for tests and for screen readers)."""
        parts = [self.title, self.body]
        for item in self.items:
            parts += [item.title, item.text]
        parts += [a.label for a in self.actions]
        if self.entry is not None:
            parts += [self.entry.label, self.entry.hint, self.entry.error, self.entry.submit.label]
        return "\n".join(p for p in parts if p)

    def __repr__(self) -> str:
        return f"Screen(id={self.id!r}, state={self.state.value}, actions={len(self.actions)})"


# -- the actions every screen reuses ------------------------
END = action("end", "结束办理")
MENU = action("menu", "返回业务菜单")
HOME = action("end", "返回首页")
OK = action("end", "知道了")
GUIDE = action("guide", "办事指南")
NOTICES = action("notices", "社区公告")
CERTIFICATE = action("certificate", "打印证明")
STATUS = action("status", "查询办理状态")
APPLICATIONS = action("applications", "打印网上申请")
PROGRESS = action("progress", "查询办理进度")
CONFIRM = action("confirm", "确认打印")
BACK = action("back", "返回")

CAN_OFFLINE = "打印本社区居民的证明、查询高龄补贴认证、查看办事指南和社区公告"
CANNOT_OFFLINE = "为外社区居民查询档案、打印或查询网上申请"


def idle() -> Screen:
    return Screen(
        "idle",
        State.IDLE,
        "欢迎使用社区事务一体机",
        "请将居民身份证平放在读卡区。\n不放身份证也可以查看办事指南、社区公告，或凭编号查询办理进度。",
        actions=(GUIDE, NOTICES, PROGRESS),
    )


def busy(state: State, title: str, body: str = "请稍候……", *, can_end: bool = True) -> Screen:
    return Screen("working", state, title, body, actions=(END,) if can_end else (), busy=True)


# -- refused cards: no personal data is kept, the only way on is back to the start ---
def card_read_interrupted() -> Screen:
    return Screen(
        "card_read_interrupted",
        State.REFUSED,
        "读卡中断",
        "读卡时身份证被移开了，没有读完。\n请将身份证平放在读卡区，听到提示音后再拿开。",
        actions=(OK,),
    )


def card_unreadable() -> Screen:
    return Screen(
        "card_unreadable",
        State.REFUSED,
        "无法读取这张卡",
        "这张卡读不出来：可能不是居民身份证，或者卡片已损坏。\n"
        "请换一张居民身份证再试，或到社区居委会人工窗口办理。",
        actions=(OK,),
    )


def reader_fault() -> Screen:
    return Screen(
        "reader_fault",
        State.REFUSED,
        "读卡器暂时不能使用",
        "读卡器出现故障，请联系工作人员，或到社区居委会人工窗口办理。",
        actions=(OK,),
    )


def id_invalid() -> Screen:
    return Screen(
        "id_invalid",
        State.REFUSED,
        "身份证号码校验不通过",
        "这张身份证上的号码没有通过校验（校验位、出生日期或性别不符），本机不能用它办理业务。\n"
        "请到社区居委会或派出所核实证件。",
        actions=(OK,),
    )


def card_expired(valid_to: str) -> Screen:
    return Screen(
        "card_expired",
        State.REFUSED,
        "身份证已过期",
        f"这张身份证的有效期到{valid_to}，已经过期，本机不能用它办理业务。\n"
        "请到派出所换领新证；急需办理的，请带上临时身份证到社区居委会人工窗口。",
        actions=(OK,),
    )


# -- the resident is known ----------------------------------
def menu(greeting: str, *, online_record: bool) -> Screen:
    body = "请选择要办理的业务。"
    if online_record:
        body += "\n您的档案不在本社区，已通过服务器查到。"
    return Screen(
        "menu",
        State.IDENTIFIED,
        f"{greeting}，您好",
        body,
        actions=(CERTIFICATE, STATUS, APPLICATIONS, PROGRESS, GUIDE, NOTICES, END),
    )


def resident_unknown(greeting: str) -> Screen:
    return Screen(
        "resident_unknown",
        State.IDENTIFIED,
        f"{greeting}，没有找到您的户籍档案",
        "本社区和服务器上都没有您的户籍档案，本机不能为您打印证明或查询高龄补贴认证。\n"
        "请带上身份证和户口簿到社区居委会办理。\n您仍可以：打印网上申请、查看办事指南和社区公告。",
        actions=(APPLICATIONS, GUIDE, NOTICES, END),
    )


def resident_unknown_offline(greeting: str, reason: str = "本机现在连不上服务器") -> Screen:
    """``reason``: why the server could not be asked (offline, no answer, method not offered)."""
    return Screen(
        "resident_unknown_offline",
        State.IDENTIFIED,
        f"{greeting}，本机没有您的档案",
        f"您的户籍档案不在本机，而{reason}，无法联网查询。\n"
        "所以现在不能为您打印证明、查询认证状态或打印网上申请。\n"
        "您可以：查看办事指南和社区公告；也可以稍后再试，或到社区居委会人工窗口办理。",
        actions=(GUIDE, NOTICES, END),
    )


def offline(what: str) -> Screen:
    return Screen(
        "offline",
        State.SERVICE,
        "暂时无法连接服务器",
        f"本机现在连不上服务器，{what}需要联网，暂时不能办理。\n"
        f"不联网可以：{CAN_OFFLINE}。\n暂时不能：{CANNOT_OFFLINE}。\n请稍后再试。",
        actions=(MENU, END),
    )


def server_problem(what: str, detail: str) -> Screen:
    return Screen(
        "server_problem",
        State.SERVICE,
        "服务器暂时没有答复",
        f"{what}：{detail}\n请稍后再试，或到社区居委会人工窗口办理。",
        actions=(MENU, END),
    )


# -- certificates -------------------------------------------
def choose_template(templates: list[tuple[str, str, str]]) -> Screen:
    """``templates``: ``(name, title, description)``."""
    items = tuple(
        Item(title, description, action("template", title, name=name))
        for name, title, description in templates
    )
    return Screen(
        "choose_template",
        State.SERVICE,
        "请选择要打印的证明",
        "证明内容来自您的身份证和本社区的户籍档案，打印前可以预览核对。",
        items=items,
        actions=(MENU, END),
    )


def record_incomplete(title: str, missing: list[str]) -> Screen:
    return Screen(
        "record_incomplete",
        State.SERVICE,
        "档案信息不全，不能打印",
        f"开具{title}需要以下档案信息，但您的档案中没有：{'、'.join(missing)}。\n"
        "为避免打印内容不全的证明，本机不会打印。请到社区居委会补充档案后再来。",
        actions=(BACK, MENU, END),
    )


def certificate_failed(title: str) -> Screen:
    return Screen(
        "certificate_failed",
        State.SERVICE,
        "暂时不能生成这份证明",
        f"本机生成{title}时出现问题，没有打印任何内容。\n请到社区居委会人工窗口办理。",
        actions=(BACK, MENU, END),
    )


def preview(title: str, serial: str, image: bytes) -> Screen:
    return Screen(
        "preview",
        State.PREVIEW,
        f"请核对{title}",
        f"请核对证明上的内容，无误后点击“确认打印”。\n证明编号：{serial}",
        actions=(CONFIRM, BACK, END),
        image=image,
    )


def printing(title: str, serial: str) -> Screen:
    return Screen(
        "printing",
        State.PRINTING,
        f"正在打印{title}",
        f"证明编号：{serial}\n请稍候，打印完成后在出纸口取走证明和回执。",
        busy=True,
    )


def printed(title: str, serial: str, *, identified: bool) -> Screen:
    return Screen(
        "printed",
        State.DONE,
        "打印完成",
        f"请在出纸口取走{title}和回执。\n证明编号：{serial}\n证明上的二维码可用于核验真伪。",
        actions=(MENU, END) if identified else (HOME,),
    )


def printer_problem(lines: list[str], *, identified: bool) -> Screen:
    return Screen(
        "printer_problem",
        State.DONE,
        "打印机出现问题",
        "\n".join([*lines, "已通知工作人员处理。"]),
        actions=(MENU, END) if identified else (HOME,),
    )


# -- information --------------------------------------------
def _with_end(back: Action) -> tuple[Action, ...]:
    return (back,) if back.id == END.id else (back, END)


def listing(
    id: str, state: State, title: str, items: tuple[Item, ...], *, empty: str, back: Action
) -> Screen:
    """A list; ``back`` is the way out (``HOME`` when no card is on the reader)."""
    return Screen(id, state, title, "" if items else empty, items=items, actions=_with_end(back))


def detail(id: str, state: State, title: str, body: str, back: Action) -> Screen:
    return Screen(id, state, title, body, actions=_with_end(back))


# -- progress of an application or a locker case, by its number (no card needed) ---
PROGRESS_KEYS = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"
"""Application numbers (A...) and locker case numbers (C...) use digits 2-9 and letters without
I and O, so nothing on the keyboard can be mistaken for another key."""
PROGRESS_LENGTH = 10


def progress_query(back: Action, error: str = "") -> Screen:
    return Screen(
        "progress_query",
        State.SERVICE,
        "查询办理进度",
        "请输入网上申请编号（A开头）或云柜办件号（C开头），共10位，见短信或回执。",
        actions=_with_end(back),
        entry=Entry(
            "编号",
            "例如 A7K2M9Q4TX",
            PROGRESS_KEYS,
            PROGRESS_LENGTH,
            action("progress_submit", "查询"),
            error,
        ),
    )


def progress_result(number: str, title: str, status: str, updated: str, back: Action) -> Screen:
    when = f"\n更新时间：{updated}" if updated else ""
    return Screen(
        "progress_result",
        State.SERVICE,
        title,
        f"编号：{number}\n办理进度：{status}{when}",
        actions=(action("progress", "查询其他编号"), *_with_end(back)),
    )
