"""The kiosk's Kivy touch UI: draws the :class:`~kiosk_ui.screens.Screen` the session asks for and
passes touches back (docs/kiosk.md).

Nothing is decided here: every word comes from :mod:`kiosk_ui.screens`, every touch goes to
``session.touch(action.id, **action.kwargs())`` and the controller refuses what the current screen
does not offer. What this module adds is presentation: a status bar (server link, card reader,
the countdown before the idle timeout, the elderly-mode switch), large touch targets, paging so a
screen never shows more choices than fit (fewer in the elderly mode), the certificate preview, and
Kivy's on-screen keyboard (:class:`~kivy.uix.vkeyboard.VKeyboard`, with a layout of exactly the
keys the entry accepts) where a screen asks for input.

Threads: the session calls ``on_change`` from the thread that changed the screen; the view hops
to Kivy's main thread with ``Clock.schedule_once``. The status bar and ``session.tick()`` run
every 0.5 s from Kivy's clock.
"""

from __future__ import annotations

import io
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

# Kivy's own log mode puts its handlers on the root logger and lowers its level: our logging
# setup (with the personal-data redaction filter) must stay the only one. Set before Kivy loads.
os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")

from kivy.app import App
from kivy.clock import Clock
from kivy.core.image import Image as CoreImage
from kivy.core.window import Window
from kivy.graphics import Color, Rectangle
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.image import Image
from kivy.uix.label import Label
from kivy.uix.vkeyboard import VKeyboard
from kivy.uix.widget import Widget

from kiosk_ui.daemon import Indicators, KioskDaemon
from kiosk_ui.screens import Action, Entry, Item, Screen, State
from kiosk_ui.session import KioskSession

log = logging.getLogger(__name__)

COUNTDOWN_FROM_S = 15
"""The countdown shows in the status bar for the last seconds before the idle timeout."""
NAVIGATION = frozenset({"end", "menu", "back"})
"""Actions that leave a screen: they stay in the bottom bar; the others are choices."""
KEYBOARD_ROW = 10
BACKSPACE = "删除"
"""The backspace key's label (the CJK fonts lack a ⌫ glyph)."""
BACKGROUND = (0.96, 0.97, 0.98, 1)
INK = (0.10, 0.12, 0.16, 1)
PRIMARY = (0.05, 0.38, 0.75, 1)
CHOICE = (0.88, 0.92, 0.98, 1)
WARNING = (0.80, 0.15, 0.10, 1)


@dataclass(frozen=True)
class Style:
    """Sizes in pixels of one reading mode."""

    font: int
    title: int
    button_height: int
    choices_per_page: int
    bar_actions: int
    """At most this many actions in the bottom bar; more become choice tiles."""
    columns: int


STANDARD = Style(font=28, title=40, button_height=96, choices_per_page=6, bar_actions=4, columns=2)
ELDERLY = Style(font=40, title=54, button_height=110, choices_per_page=3, bar_actions=3, columns=1)
STATUS_FONT = 24
"""The status bar keeps one size in both modes."""


def _paint(widget: Widget, rgba: Sequence[float]) -> None:
    """A flat background for ``widget`` that follows its size."""
    with widget.canvas.before:
        Color(*rgba)
        rect = Rectangle(pos=widget.pos, size=widget.size)
    widget.bind(
        pos=lambda w, v: setattr(rect, "pos", v), size=lambda w, v: setattr(rect, "size", v)
    )


class KioskView(BoxLayout):  # type: ignore[misc]
    """The whole screen for one :class:`KioskSession` (the root widget of :class:`KioskApp`)."""

    def __init__(
        self,
        session: KioskSession,
        indicators: Callable[[], Indicators],
        *,
        font_name: str,
        elderly: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(orientation="vertical", padding=16, spacing=12, **kwargs)
        _paint(self, BACKGROUND)
        self.session = session
        self._indicators = indicators
        self.font_name = font_name
        self.elderly = elderly
        self._screen: Screen = session.screen
        self._page = 0
        self._typed = ""
        self.keyboard: VKeyboard | None = None
        self.field: Label | None = None

        self.bar = BoxLayout(size_hint_y=None, height=64, spacing=16)
        self.brand = self._label("社区事务一体机", size=STATUS_FONT, bold=True, halign="left")
        self.network = self._label("", size=STATUS_FONT, halign="right")
        self.reader = self._label("", size=STATUS_FONT, halign="right", color=WARNING)
        self.countdown = self._label("", size=STATUS_FONT, halign="right", color=WARNING, bold=True)
        self.mode = self._button("", self._toggle_elderly, background=CHOICE, width=220, color=INK)
        for widget, share in ((self.brand, 1.3), (self.reader, 1.3), (self.network, 1.6),
                              (self.countdown, 1.0), (self.mode, None)):  # fmt: skip
            if share is not None:
                widget.size_hint_x = share
            self.bar.add_widget(widget)
        self.body = BoxLayout(orientation="vertical", spacing=12)
        self.actions = BoxLayout(size_hint_y=None, spacing=16)
        for widget in (self.bar, self.body, self.actions):
            self.add_widget(widget)
        self.refresh_status()
        self.show(session.screen)

    # -- widgets ---------------------------------------------------------------------------------
    @property
    def style(self) -> Style:
        return ELDERLY if self.elderly else STANDARD

    def _label(
        self,
        text: str,
        *,
        size: int | None = None,
        bold: bool = False,
        halign: str = "left",
        color: Sequence[float] = INK,
        fit: bool = False,
    ) -> Label:
        """A label wrapped to its width; ``fit``: as tall as its text (a line of the body),
        else it shares the space it is given."""
        label = Label(
            text=text,
            font_name=self.font_name,
            font_size=size or self.style.font,
            bold=bold,
            halign=halign,
            valign="middle",
            color=color,
        )
        label.bind(size=lambda w, v: setattr(w, "text_size", (v[0], None)))
        if fit:
            label.size_hint_y = None
            label.bind(texture_size=lambda w, v: setattr(w, "height", v[1] + 8))
        return label

    def _button(
        self,
        text: str,
        on_press: Callable[[], object],
        *,
        background: Sequence[float] = PRIMARY,
        width: int | None = None,
        color: Sequence[float] = (1, 1, 1, 1),
    ) -> Button:
        button = Button(
            text=text,
            font_name=self.font_name,
            font_size=self.style.font,
            background_normal="",
            background_color=background,
            color=color,
            halign="center",
            valign="middle",
        )
        if width is not None:
            button.size_hint_x, button.width = None, width
        button.bind(size=lambda w, v: setattr(w, "text_size", (v[0] - 16, None)))
        button.bind(on_release=lambda _w: on_press())
        return button

    # -- rendering -------------------------------------------------------------------------------
    def show(self, screen: Screen) -> None:
        """Draw ``screen`` (main thread). A new screen starts at its first page, with an empty
        field; the same screen again (a redraw) keeps both."""
        if screen is not self._screen:
            self._page = 0
            if screen.id != self._screen.id:
                self._typed = ""  # kept when the same entry comes back with an error
        self._screen = screen
        self._render()

    def _render(self) -> None:
        screen, style = self._screen, self.style
        self.body.clear_widgets()
        self.actions.clear_widgets()
        self.keyboard = self.field = None
        self.actions.height = style.button_height
        self.mode.text = "标准字体" if self.elderly else "大字模式"
        self.mode.font_size = STATUS_FONT

        column = self.body
        self.body.orientation = "vertical"
        if screen.image is not None:  # the words on the left, the page as tall as it can be
            self.body.orientation = "horizontal"
            column = BoxLayout(orientation="vertical", spacing=12)
            self.body.add_widget(column)
            self.body.add_widget(self._preview(screen.image))
        column.add_widget(
            self._label(screen.title, size=style.title, bold=True, color=PRIMARY, fit=True)
        )
        text = screen.body
        if screen.busy:
            text = f"{text}\n（正在处理，请不要离开）" if text else "正在处理，请不要离开"
        if text:
            column.add_widget(self._label(text, fit=True))
        if column is not self.body:
            column.add_widget(Widget())
        bar, choices = self._split_actions(screen.actions)
        if screen.entry is not None:
            self._entry(screen.entry)
        lines = list(screen.items) + [Item(a.label, "", a) for a in choices]
        if lines:
            self._choices(lines)
        for act in bar:
            primary = act.id not in NAVIGATION
            self.actions.add_widget(
                self._button(
                    act.label,
                    self._toucher(act),
                    background=PRIMARY if primary else CHOICE,
                    color=(1, 1, 1, 1) if primary else INK,
                )
            )

    def _split_actions(self, actions: Sequence[Action]) -> tuple[list[Action], list[Action]]:
        """(bottom bar, choice tiles): all in the bar when they fit, else navigation in the bar."""
        if len(actions) <= self.style.bar_actions:
            return list(actions), []
        bar = [a for a in actions if a.id in NAVIGATION]
        return bar, [a for a in actions if a.id not in NAVIGATION]

    def _choices(self, lines: list[Item]) -> None:
        style = self.style
        pages = max(1, math.ceil(len(lines) / style.choices_per_page))
        self._page = min(self._page, pages - 1)
        start = self._page * style.choices_per_page
        grid = GridLayout(cols=style.columns, spacing=12, size_hint_y=None)
        grid.bind(minimum_height=grid.setter("height"))
        for item in lines[start : start + style.choices_per_page]:
            text = f"{item.title}\n{item.text}" if item.text else item.title
            if item.action is not None:
                widget: Widget = self._button(
                    text, self._toucher(item.action), background=CHOICE, color=INK
                )
            else:
                widget = self._label(text)
                _paint(widget, (1, 1, 1, 1))
            widget.size_hint_y, widget.height = (
                None,
                style.button_height * (1.4 if item.text else 1),
            )
            grid.add_widget(widget)
        self.body.add_widget(grid)
        if pages > 1:  # the page turners go first in the bottom bar
            previous = self._button("上一页", lambda: self._turn(-1), background=CHOICE, color=INK)
            following = self._button("下一页", lambda: self._turn(1), background=CHOICE, color=INK)
            previous.disabled = self._page == 0
            following.disabled = self._page == pages - 1
            self.actions.add_widget(previous)
            self.actions.add_widget(following)
            self.body.add_widget(
                self._label(f"第{self._page + 1}页，共{pages}页", halign="center", fit=True)
            )
        self.body.add_widget(Widget())  # the rest of the space stays empty

    def _preview(self, png: bytes) -> Image:
        texture = CoreImage(io.BytesIO(png), ext="png").texture
        return Image(texture=texture, fit_mode="contain")

    def _entry(self, entry: Entry) -> None:
        style = self.style
        row = BoxLayout(size_hint_y=None, height=style.button_height, spacing=16)
        label = self._label(entry.label)
        label.size_hint_x, label.width = None, style.font * (len(entry.label) + 1)
        row.add_widget(label)
        shown = self._typed or entry.hint
        self.field = self._label(shown, size=style.title, bold=bool(self._typed))
        self.field.color = INK if self._typed else (0.5, 0.5, 0.5, 1)
        _paint(self.field, (1, 1, 1, 1))
        row.add_widget(self.field)
        row.add_widget(self._button(entry.submit.label, lambda: self._submit(entry)))
        self.body.add_widget(row)
        if entry.error:
            self.body.add_widget(self._label(entry.error, color=WARNING, fit=True))
        keyboard = VKeyboard(
            size_hint=(1, None),
            height=style.button_height * 4,
            do_translation=False,
            do_rotation=False,
            do_scale=False,
            font_name=self.font_name,
            font_size=style.font,
        )
        keyboard.available_layouts["linli-entry"] = _keyboard_layout(entry.keys)
        keyboard.layout = "linli-entry"
        keyboard.bind(on_textinput=lambda _k, text: self._typed_key(entry, text))
        keyboard.bind(on_key_down=lambda _k, code, text, _m: self._special_key(entry, code, text))
        self.keyboard = keyboard
        self.body.add_widget(keyboard)

    # -- input -----------------------------------------------------------------------------------
    def _toucher(self, action: Action) -> Callable[[], None]:
        return lambda: self._touch(action)

    def _touch(self, action: Action) -> None:
        if not self.session.touch(action.id, **action.kwargs()):
            log.debug("touch %s ignored (the screen changed)", action.id)

    def _turn(self, step: int) -> None:
        self._page += step
        self.session.keep_alive()
        self._render()

    def _typed_key(self, entry: Entry, text: str) -> None:
        if text and text in entry.keys and len(self._typed) < entry.max_length:
            self._typed += text
        self._key_done()

    def _special_key(self, entry: Entry, code: str | None, text: str | None) -> None:
        if code == "backspace":
            self._typed = self._typed[:-1]
        elif text:  # a window provider that sends characters as key-downs
            self._typed_key(entry, text)
            return
        self._key_done()

    def _key_done(self) -> None:
        self.session.keep_alive()
        if self.field is not None and self._screen.entry is not None:
            self.field.text = self._typed or self._screen.entry.hint
            self.field.color = INK if self._typed else (0.5, 0.5, 0.5, 1)

    def _submit(self, entry: Entry) -> None:
        if not self.session.touch(entry.submit.id, text=self._typed):
            log.debug("entry submit ignored (the screen changed)")

    def _toggle_elderly(self) -> None:
        self.elderly = not self.elderly
        self.session.keep_alive()
        self._page = 0
        self._render()

    def on_touch_down(self, touch: Any) -> bool:
        """Any touch while the countdown shows keeps the session (besides what it touches)."""
        if self.session.state is not State.IDLE:
            self.session.keep_alive()
        return bool(super().on_touch_down(touch))

    # -- status bar, every 0.5 s -----------------------------------------------------------------
    def refresh_status(self, _dt: float = 0.0) -> None:
        """Tick the session (idle timeout) and update the status bar."""
        self.session.tick()
        status = self._indicators()
        self.network.text = "● 已联网" if status.online else "● 未联网：本社区业务照常"
        self.network.color = (0.1, 0.55, 0.2, 1) if status.online else WARNING
        self.reader.text = "" if status.reader_ok else "读卡器故障，请联系工作人员"
        left = self.session.seconds_left()
        showing = left is not None and left <= COUNTDOWN_FROM_S
        self.countdown.text = f"{left}秒后自动退出" if showing else ""

    def schedule_show(self, _screen: Screen) -> None:
        """``on_change`` for the session: redraw on Kivy's main thread (any thread may call).

        Draws the session's screen as it is when the redraw runs, not the one passed: changes
        made by different threads may be announced out of order, and the last one must win."""
        Clock.schedule_once(lambda _dt: self.show(self.session.screen))


def _keyboard_layout(keys: str) -> dict[str, Any]:
    """A VKeyboard layout with exactly ``keys``: the digits on the first row with a backspace,
    then the letters in rows of ten."""
    digits = [c for c in keys if c.isdigit()]
    others = [c for c in keys if not c.isdigit()]
    rows = [digits] + [others[i : i + KEYBOARD_ROW] for i in range(0, len(others), KEYBOARD_ROW)]
    rows = [row for row in rows if row]
    layout: dict[str, Any] = {
        "title": "linli-entry",
        "description": "the characters the entry accepts",
        "cols": KEYBOARD_ROW + 2,
        "rows": len(rows),
    }
    for number, row in enumerate(rows, start=1):
        line: list[list[Any]] = [[c, c, None, 1] for c in row]
        if number == 1:
            line.append([BACKSPACE, None, "backspace", 2])
        layout[f"normal_{number}"] = line
    return layout


class KioskApp(App):  # type: ignore[misc]
    """The kiosk's window over a :class:`KioskDaemon`; stops the daemon when the window closes."""

    title = "社区事务一体机"

    def __init__(self, daemon: KioskDaemon, *, font_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.daemon = daemon
        self.font_name = font_name
        self.view: KioskView | None = None

    def build(self) -> KioskView:
        kiosk = self.daemon.config.kiosk
        Window.clearcolor = BACKGROUND
        if kiosk.fullscreen:
            Window.fullscreen = "auto"
            Window.show_cursor = False
        else:
            Window.size = (kiosk.width, kiosk.height)
        view = KioskView(
            self.daemon.session,
            self.daemon.indicators,
            font_name=self.font_name,
            elderly=kiosk.elderly_mode,
        )
        self.view = view
        self.daemon.session.listen(view.schedule_show)
        Clock.schedule_interval(view.refresh_status, 0.5)
        self.daemon.start()
        return view

    def on_stop(self) -> None:
        self.daemon.stop()
