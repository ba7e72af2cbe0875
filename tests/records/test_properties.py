"""Property tests of the row rules: any cell content is either accepted in normalised form or
rejected with a report line, never an exception, and the report never holds a long cell value
(an ID number, a name, an address) in clear."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given
from hypothesis import strategies as st

from device.protocol import id_number_problems
from sync_server.records import load_mapping
from sync_server.records.sheet import Sheet
from sync_server.records.validate import validate_sheet
from tests.records.conftest import EXAMPLE_MAPPING, HEADERS, TODAY, make_id

MAPPING = load_mapping(EXAMPLE_MAPPING)
TEXT = st.text(alphabet="0123456789Xx-/ 年月日王李张伟芳路号+.'１２", max_size=24)
CELL = st.one_of(
    st.none(),
    TEXT,
    st.integers(min_value=-(10**19), max_value=10**19),
    st.floats(allow_nan=True, allow_infinity=True),
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2100, 1, 1)),
    st.booleans(),
)
VALID_ID = st.builds(
    make_id,
    st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY).map(lambda d: d.strftime("%Y%m%d")),
    st.integers(min_value=0, max_value=399),
    male=st.booleans(),
)


@given(st.lists(st.tuples(*[CELL] * len(HEADERS)), min_size=1, max_size=6))
def test_any_cells_are_accepted_or_reported(rows: list[tuple[object, ...]]) -> None:
    sheet = Sheet(headers=HEADERS, rows=tuple((n + 2, r) for n, r in enumerate(rows)))
    result = validate_sheet(sheet, MAPPING, today=TODAY)
    rejected = {p.row for p in result.problems}
    assert set(result.accepted) | rejected == {n + 2 for n in range(len(rows))}
    assert not set(result.accepted) & rejected
    for accepted in result.accepted.values():
        assert id_number_problems(accepted.id_number) == []
        assert accepted.household_id in result.households
        assert dt.date.fromisoformat(accepted.birth_date) <= TODAY
    report = json.dumps([p.to_json() for p in result.problems], ensure_ascii=False)
    for cells in rows:
        for value in cells:
            if isinstance(value, str) and len(value.strip()) >= 9:
                assert value.strip() not in report


@given(VALID_ID, st.sampled_from(["", " ", "'"]), st.booleans())
def test_valid_id_numbers_are_accepted_however_typed(
    id_number: str, prefix: str, lower: bool
) -> None:
    typed = prefix + (id_number.lower() if lower else id_number)
    cells = (typed, "王伟", None, None, "H1", "幸福路1号", None, None, None, None, None)
    sheet = Sheet(headers=HEADERS, rows=((2, cells),))
    result = validate_sheet(sheet, MAPPING, today=TODAY)
    assert result.problems == []
    (accepted,) = result.accepted.values()
    assert accepted.id_number == id_number
    assert accepted.gender == ("男" if int(id_number[16]) % 2 else "女")
