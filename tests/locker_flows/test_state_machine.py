"""The compartment state machine on a real store: every allowed move is written together with its
``compartment.state`` event (or neither is), every other move is refused and changes nothing;
the locker grows and shrinks with its configuration without losing a compartment in use, and a
deposit gets the smallest free compartment that fits."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from device.atrest import DeviceKey
from device.clock import FakeClock
from device.store import Store, open_store
from locker.compartments import STATE_EVENT, TRANSITIONS, Compartments, State
from locker.errors import CompartmentStateError, UnknownCompartmentError


class Boom(Exception):
    """Something failing later in the same transaction."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with open_store(tmp_path / "store.db", key=DeviceKey.generate(), clock=FakeClock()) as s:
        yield s


@pytest.fixture
def compartments(store: Store) -> Compartments:
    c = Compartments(store)
    c.ensure(["S", "M", "M", "L"], store.clock.time())
    return c


def put(store: Store, number: int, state: State, case: str | None = None) -> None:
    """Set a compartment's state directly (test setup, no event)."""
    with store.transaction() as tx:
        tx.execute(
            "UPDATE compartments SET state = ?, case_id = ? WHERE number = ?",
            (str(state), case, number),
        )


def state_events(store: Store) -> list[dict[str, object]]:
    return [dict(e.data) for e in store.outbox.pending(10_000) if e.type == STATE_EVENT]


ALLOWED = sorted(TRANSITIONS)
FORBIDDEN = sorted(set(itertools.product(State, State)) - TRANSITIONS)


def test_the_machine_is_the_one_of_the_design() -> None:
    # DESIGN.md: free -> reserved -> open_for_deposit -> holding -> open_for_pickup -> free.
    main_line = ["free", "reserved", "open_for_deposit", "holding", "open_for_pickup", "free"]
    for a, b in itertools.pairwise(main_line):
        assert (State(a), State(b)) in TRANSITIONS
    # Nothing skips a step of the main line, and nothing leaves fault but a technician's clear.
    assert (State.FREE, State.HOLDING) not in TRANSITIONS
    assert {b for a, b in TRANSITIONS if a is State.FAULT} == {State.FREE, State.HOLDING}


@pytest.mark.parametrize(("before", "after"), ALLOWED, ids=str)
def test_allowed_transition_is_written_with_one_event(
    store: Store, compartments: Compartments, before: State, after: State
) -> None:
    put(store, 2, before, case="C-7")
    seen = store.outbox.last_seq

    with store.transaction() as tx:
        moved = compartments.move(tx, 2, after, reason="test")

    assert moved.state is after
    assert compartments.get(2).state is after
    events = [dict(e.data) for e in store.outbox.pending(100, after=seen)]
    assert events == [
        {"compartment": 2, "from": str(before), "to": str(after), "case": "C-7", "reason": "test"}
    ]
    # The other compartments did not move.
    assert [c.state for c in compartments.all() if c.number != 2] == [State.FREE] * 3


@pytest.mark.parametrize(("before", "after"), ALLOWED[:4], ids=str)
def test_rolled_back_transition_leaves_neither_state_nor_event(
    store: Store, compartments: Compartments, before: State, after: State
) -> None:
    put(store, 3, before)
    seen = store.outbox.last_seq

    with pytest.raises(Boom), store.transaction() as tx:
        compartments.move(tx, 3, after, reason="test")
        raise Boom

    assert compartments.get(3).state is before
    assert store.outbox.pending(100, after=seen) == []
    assert store.outbox.last_seq == seen


@pytest.mark.parametrize(("before", "after"), FORBIDDEN, ids=str)
def test_forbidden_transition_is_refused_and_changes_nothing(
    store: Store, compartments: Compartments, before: State, after: State
) -> None:
    put(store, 1, before, case="C-1")
    seen = store.outbox.last_seq

    with (
        pytest.raises(CompartmentStateError, match="cannot go from") as refused,
        store.transaction() as tx,
    ):
        compartments.move(tx, 1, after, reason="test", case_id="C-other")

    assert refused.value.number == 1
    row = compartments.get(1)
    assert (row.state, row.case_id) == (before, "C-1")
    assert store.outbox.pending(100, after=seen) == []


def test_a_move_from_an_unexpected_state_is_refused(
    store: Store, compartments: Compartments
) -> None:
    put(store, 1, State.HOLDING, case="C-1")
    with (
        pytest.raises(CompartmentStateError, match="is holding, not free"),
        store.transaction() as tx,
    ):
        compartments.move(tx, 1, State.DISABLED, reason="test", expect=State.FREE)
    assert compartments.get(1).state is State.HOLDING
    assert state_events(store) == []


def test_a_compartment_that_does_not_exist_cannot_move(
    store: Store, compartments: Compartments
) -> None:
    with pytest.raises(UnknownCompartmentError), store.transaction() as tx:
        compartments.move(tx, 9, State.RESERVED, reason="test")
    assert state_events(store) == []


# -- ensure: the compartments follow the configuration -------------------------------------------


def sizes_and_states(compartments: Compartments) -> list[tuple[int, str, State]]:
    return [(c.number, c.size, c.state) for c in compartments.all()]


def test_ensure_creates_free_compartments_once(store: Store) -> None:
    compartments = Compartments(store)
    compartments.ensure(["S", "M"], 0.0)
    compartments.ensure(["S", "M"], 0.0)
    assert sizes_and_states(compartments) == [(1, "S", State.FREE), (2, "M", State.FREE)]


def test_ensure_grows_without_touching_compartments_in_use(
    store: Store, compartments: Compartments
) -> None:
    put(store, 2, State.HOLDING, case="C-2")
    compartments.ensure(["S", "M", "M", "L", "L", "S"], 0.0)
    assert sizes_and_states(compartments) == [
        (1, "S", State.FREE),
        (2, "M", State.HOLDING),
        (3, "M", State.FREE),
        (4, "L", State.FREE),
        (5, "L", State.FREE),
        (6, "S", State.FREE),
    ]
    assert compartments.get(2).case_id == "C-2"


def test_ensure_changes_a_size_in_place(store: Store, compartments: Compartments) -> None:
    compartments.ensure(["S", "L", "M", "L"], 0.0)
    assert [c.size for c in compartments.all()] == ["S", "L", "M", "L"]


def test_ensure_shrinks_away_free_and_disabled_compartments(
    store: Store, compartments: Compartments
) -> None:
    put(store, 3, State.DISABLED)
    compartments.ensure(["S", "M"], 0.0)
    assert sizes_and_states(compartments) == [(1, "S", State.FREE), (2, "M", State.FREE)]


@pytest.mark.parametrize(
    "busy",
    [State.RESERVED, State.OPEN_FOR_DEPOSIT, State.HOLDING, State.OPEN_FOR_PICKUP, State.FAULT],
)
def test_ensure_refuses_to_shrink_away_a_compartment_in_use(
    store: Store, compartments: Compartments, busy: State
) -> None:
    put(store, 4, busy, case="C-4")
    with pytest.raises(CompartmentStateError, match=r"compartments \[4\] are in use"):
        compartments.ensure(["L", "M"], 0.0)
    # All or nothing: not even the size change of compartment 1 was kept.
    assert sizes_and_states(compartments) == [
        (1, "S", State.FREE),
        (2, "M", State.FREE),
        (3, "M", State.FREE),
        (4, "L", busy),
    ]


def test_ensure_refuses_to_shrink_away_a_disabled_compartment_holding_documents(
    store: Store, compartments: Compartments
) -> None:
    put(store, 4, State.HOLDING, case="C-4")
    with store.transaction() as tx:
        compartments.move(tx, 4, State.DISABLED, reason="disabled", resume_state=State.HOLDING)

    with pytest.raises(CompartmentStateError, match="in use"):
        compartments.ensure(["S", "M", "M"], 0.0)
    assert compartments.get(4).case_id == "C-4"


def test_ensure_shrinks_away_a_compartment_used_before(
    store: Store, compartments: Compartments
) -> None:
    # Compartment 4 served a case (its open requests are in the journal) and is free again.
    with store.transaction() as tx:
        tx.execute(
            "INSERT INTO locker_intents (compartment, flow, source, created_at, status) "
            "VALUES (4, 'deposit', 'cmd:x', 0, 'done')"
        )
    compartments.ensure(["S", "M", "M"], 0.0)
    assert [c.number for c in compartments.all()] == [1, 2, 3]


# -- free_of_size --------------------------------------------------------------------------------


def pick(store: Store, compartments: Compartments, size: str) -> int | None:
    with store.transaction() as tx:
        found = compartments.free_of_size(tx, size)
    return None if found is None else found.number


def test_free_of_size_picks_the_smallest_fitting_free_compartment(
    store: Store, compartments: Compartments
) -> None:
    # Sizes S, M, M, L.
    assert pick(store, compartments, "S") == 1
    assert pick(store, compartments, "M") == 2
    assert pick(store, compartments, "L") == 4

    put(store, 1, State.HOLDING, "C-1")
    assert pick(store, compartments, "S") == 2  # no S left: the smallest bigger one
    put(store, 2, State.RESERVED, "C-2")
    assert pick(store, compartments, "S") == 3
    put(store, 3, State.FAULT)
    assert pick(store, compartments, "S") == 4
    assert pick(store, compartments, "M") == 4
    put(store, 4, State.DISABLED)
    assert pick(store, compartments, "S") is None
    assert pick(store, compartments, "L") is None


def test_free_of_size_never_gives_a_smaller_compartment(
    store: Store, compartments: Compartments
) -> None:
    put(store, 4, State.HOLDING, "C-4")
    assert pick(store, compartments, "L") is None
    assert pick(store, compartments, "M") == 2
