"""Certificate templates as data: TOML files that declare fields, their sources and an A4 layout.

A community office adds a template by dropping a ``.toml`` file into ``certificate.templates_dir``
(docs/certificates.md describes the format). Everything a template names is checked when it is
loaded, so a typo fails at start with :class:`TemplateError` naming the file and the field, never
half-way through printing a resident's certificate.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from device.errors import LinliError

BUILTIN_DIR = Path(__file__).resolve().parent / "templates"
"""The templates shipped with Linli; always available."""

CARD_KEYS = (
    "name",
    "gender",
    "nation",
    "birth",
    "address",
    "id_number",
    "issuer",
    "valid_from",
    "valid_to",
)
"""Identity fields a ``card`` source may name."""
KIOSK_KEYS = ("community",)
"""Kiosk configuration values (``[certificate]`` section) a ``kiosk`` source may name."""
TODAY_KEYS = ("date", "year")
"""``today`` in full (2026年11月23日) or the year alone."""
COMPUTED_KEYS = ("age", "serial", "valid_until", "member_count")
"""Values Linli computes: age at today, the serial, today + validity_days, household size."""
BUILTIN_PLACEHOLDERS = ("title", "serial")
"""Placeholders every template may use without declaring a field."""

A4_WIDTH_MM = 210.0
A4_HEIGHT_MM = 297.0

_IDENT = r"^[a-z][a-z0-9_]{0,39}$"
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


class TemplateError(LinliError, ValueError):
    """A template file is unreadable or names something that does not exist."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


X = Annotated[float, Field(ge=0, le=A4_WIDTH_MM)]
Y = Annotated[float, Field(ge=0, le=A4_HEIGHT_MM)]
FontSize = Annotated[float, Field(ge=6, le=48)]


class FieldSpec(_Model):
    """One value the certificate needs and where it comes from."""

    source: Literal["card", "household", "kiosk", "today", "computed"]
    # card: an Identity field; household: a dotted path in the household record; kiosk/today/
    # computed: one of a fixed set. Empty means "same as the field id".
    key: str = ""
    label: str = ""
    required: bool = True
    type: Literal["text", "date", "list"] = "text"

    def lookup(self, field_id: str) -> str:
        """The key actually looked up."""
        return self.key or field_id


class TextBlock(_Model):
    """One line at (x, y): x is the left edge, the centre or the right edge depending on align."""

    type: Literal["text"]
    x: X
    y: Y
    text: str
    size: FontSize = 12
    align: Literal["left", "center", "right"] = "left"


class ParagraphBlock(_Model):
    """Flowing text ``width`` mm wide from (x, y) down; a blank line starts a new paragraph."""

    type: Literal["paragraph"]
    x: X
    y: Y
    width: Annotated[float, Field(gt=10, le=A4_WIDTH_MM)]
    text: str
    size: FontSize = 14
    # Distance between baselines in points; 0 means 1.8 x size.
    leading: Annotated[float, Field(ge=0, le=100)] = 0
    # First-line indent in characters (two full-width characters is the Chinese convention).
    indent: Annotated[int, Field(ge=0, le=8)] = 2


class CellBlock(_Model):
    """A box (x, y, w, h) with text wrapped inside and centred vertically: the stuff of forms."""

    type: Literal["cell"]
    x: X
    y: Y
    w: Annotated[float, Field(gt=0, le=A4_WIDTH_MM)]
    h: Annotated[float, Field(gt=0, le=A4_HEIGHT_MM)]
    text: str = ""
    size: FontSize = 12
    align: Literal["left", "center"] = "center"
    border: bool = True


class Column(_Model):
    """A table column: its heading, the key in each row object, its width in mm."""

    title: str
    key: Annotated[str, Field(pattern=_IDENT)]
    width: Annotated[float, Field(gt=0, le=A4_WIDTH_MM)]
    type: Literal["text", "date"] = "text"
    required: bool = True


class TableBlock(_Model):
    """One row per item of a ``list`` field (e.g. household members), with a heading row."""

    type: Literal["table"]
    x: X
    y: Y
    rows: str
    columns: Annotated[list[Column], Field(min_length=1, max_length=10)]
    size: FontSize = 11
    row_height: Annotated[float, Field(ge=5, le=40)] = 9
    max_rows: Annotated[int, Field(ge=1, le=30)] = 12


Block = Annotated[TextBlock | ParagraphBlock | CellBlock | TableBlock, Field(discriminator="type")]


class VerificationSpec(_Model):
    """Where the verification QR goes (top-left corner, side in mm); the serial prints beside it."""

    x: X = 20
    y: Y = 240
    size: Annotated[float, Field(ge=20, le=80)] = 34


class Template(_Model):
    """A loaded, checked certificate template."""

    name: Annotated[str, Field(pattern=_IDENT)]
    title: Annotated[str, Field(min_length=1, max_length=40)]
    description: str = ""
    # Lifetime of the verification QR (how long the server will call the paper current).
    validity_days: Annotated[int, Field(ge=1, le=3660)] = 90
    fields: dict[Annotated[str, Field(pattern=_IDENT)], FieldSpec]
    blocks: Annotated[list[Block], Field(min_length=1)]
    verification: VerificationSpec = VerificationSpec()
    path: str = ""

    def field_label(self, field_id: str) -> str:
        """How a field is named in messages for staff: its label, else its id."""
        spec = self.fields.get(field_id)
        return spec.label if spec is not None and spec.label else field_id


def placeholders(text: str) -> Iterator[str]:
    """The ``{name}`` placeholders of ``text``; ValueError on a malformed one."""
    for _, name, spec, conversion in string.Formatter().parse(text):
        if name is None:
            continue
        if spec or conversion or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"placeholder {{{name}}} must be a plain field id like {{name}}")
        yield name


def _describe(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown key (misspelled?)"
    if error["type"] == "missing":
        return f"{where}: required key is missing"
    return f"{where}: {error['msg']} (got {error.get('input')!r})"


def _check_field(field_id: str, spec: FieldSpec) -> str | None:
    key = spec.lookup(field_id)
    allowed = {
        "card": CARD_KEYS,
        "kiosk": KIOSK_KEYS,
        "today": TODAY_KEYS,
        "computed": COMPUTED_KEYS,
    }.get(spec.source)
    if spec.source == "today" and not spec.key:
        key = "date"
    if allowed is not None and key not in allowed:
        return f"{spec.source} has no value {key!r} (known: {', '.join(allowed)})"
    if spec.source == "household" and not _PATH.match(key):
        return f"household key {key!r} must be a dotted path like address or difficulty.reason"
    if spec.type == "list" and spec.source != "household":
        return "only household fields can be lists"
    if spec.type == "date" and spec.source != "household":
        return f"type = 'date' is for household values; {spec.source} values are formatted already"
    return None


def _check_blocks(template: Template) -> list[str]:
    problems: list[str] = []
    known = set(template.fields) | set(BUILTIN_PLACEHOLDERS)
    for i, block in enumerate(template.blocks):
        where = f"blocks[{i}] ({block.type})"
        if isinstance(block, TableBlock):
            spec = template.fields.get(block.rows)
            if spec is None or spec.type != "list":
                problems.append(f"{where}: rows = {block.rows!r} is not a declared list field")
            continue
        try:
            names = list(placeholders(block.text))
        except ValueError as err:
            problems.append(f"{where}: {err}")
            continue
        for name in names:
            if name not in known:
                problems.append(f"{where}: placeholder {{{name}}} is not a declared field")
            elif name in template.fields and template.fields[name].type == "list":
                problems.append(f"{where}: list field {{{name}}} can only be shown by a table")
    return problems


def parse_template(data: dict[str, Any], path: str = "<template>") -> Template:
    """Validate a parsed TOML template; :class:`TemplateError` names the file and each bad field."""
    try:
        template = Template.model_validate({**data, "path": path})
    except ValidationError as err:
        details = "; ".join(_describe(e) for e in err.errors())
        raise TemplateError(f"{path}: invalid template: {details}") from err
    problems: list[str] = []
    for field_id, spec in template.fields.items():
        problem = _check_field(field_id, spec)
        if problem:
            problems.append(f"fields.{field_id}: {problem}")
    problems += _check_blocks(template)
    if problems:
        raise TemplateError(f"{path}: invalid template: {'; '.join(problems)}")
    return template


def load_template(path: str | Path) -> Template:
    """Read and check one template file."""
    path = Path(path)
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except OSError as err:
        raise TemplateError(f"{path}: cannot read the template ({err.strerror})") from err
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise TemplateError(f"{path}: not valid TOML: {err}") from err
    template = parse_template(data, str(path))
    if template.name != path.stem:
        raise TemplateError(
            f"{path}: name = {template.name!r} must match the file name ({path.stem}.toml)"
        )
    return template


def load_templates(templates_dir: str | Path = "") -> dict[str, Template]:
    """The built-in templates plus those in ``templates_dir`` (which override same-named ones)."""
    templates = {t.name: t for t in map(load_template, sorted(BUILTIN_DIR.glob("*.toml")))}
    if templates_dir:
        directory = Path(templates_dir)
        if not directory.is_dir():
            raise TemplateError(f"{directory}: certificate.templates_dir is not a directory")
        templates.update({t.name: t for t in map(load_template, sorted(directory.glob("*.toml")))})
    return templates


def get_template(name: str, templates_dir: str | Path = "") -> Template:
    """One template by name; the error lists the available ones."""
    templates = load_templates(templates_dir)
    try:
        return templates[name]
    except KeyError:
        raise TemplateError(
            f"unknown certificate template {name!r}; available: {', '.join(sorted(templates))}"
        ) from None
