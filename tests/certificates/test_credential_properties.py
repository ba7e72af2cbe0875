"""Property tests: whatever is scanned, verify() answers with a CredentialError or valid claims."""

from __future__ import annotations

import base45
import cbor2
from hypothesis import assume, given
from hypothesis import strategies as st

from device.credential import (
    CredentialClaims,
    CredentialError,
    generate_signing_key,
    issue,
    verify,
)

KEY = generate_signing_key("srv-1")
KEYS = {KEY.kid: KEY.verify_key}
NOW = 1_790_000_000
VALID = issue(
    CredentialClaims(
        kind="deposit", sub="C1", aud="locker-1", nbf=NOW, exp=NOW + 600, compartment=3
    ),
    KEY,
)
RAW = base45.b45decode(VALID[4:])
B45 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"


def _refused(text: str) -> None:
    try:
        verify(text, KEYS, audience="locker-1", now=NOW)
    except CredentialError:
        return
    raise AssertionError(f"accepted {text!r}")


@given(st.text(max_size=400))
def test_random_text_is_refused(text: str) -> None:
    _refused(text)


@given(st.text(alphabet=B45, max_size=400))
def test_random_base45_text_is_refused(text: str) -> None:
    _refused("LQ1:" + text)


@given(st.binary(max_size=300))
def test_random_bytes_are_refused(data: bytes) -> None:
    _refused("LQ1:" + base45.b45encode(data).decode())


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.binary() | st.text(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(st.integers() | st.text(), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
def test_random_cbor_is_refused(item: object) -> None:
    _refused("LQ1:" + base45.b45encode(cbor2.dumps(item)).decode())


@given(st.data())
def test_mutated_valid_credentials_are_refused(data: st.DataObject) -> None:
    raw = bytearray(RAW)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] ^= data.draw(st.integers(1, 255))
    assume(bytes(raw) != RAW)  # two flips of one byte may cancel out
    _refused("LQ1:" + base45.b45encode(bytes(raw)).decode())


@given(st.integers(0, len(RAW) - 1), st.integers(1, 40))
def test_truncated_or_extended_credentials_are_refused(cut: int, extra: int) -> None:
    _refused("LQ1:" + base45.b45encode(RAW[:cut]).decode())
    _refused("LQ1:" + base45.b45encode(RAW + bytes(extra)).decode())


@given(st.integers(4, len(VALID) - 1), st.sampled_from(B45))
def test_changed_characters_are_refused(i: int, char: str) -> None:
    mutated = VALID[:i] + char + VALID[i + 1 :]
    if mutated != VALID:
        _refused(mutated)
