"""Benchmarks behind ``linli bench NAME --json`` and the measurement record they print.

Every figure an issue asks for comes from here: a list of measurements, each with ``name``,
``unit``, ``n`` and ``p50``/``p95`` (or ``value``), plus ``reference`` and ``ratio`` when the
figure is compared with a reference measured in the same run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def summarize(
    name: str,
    unit: str,
    samples: Sequence[float],
    reference: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """p50/p95 of ``samples``; with ``reference``, ``ratio`` = p50 / reference."""
    if not samples:
        raise ValueError(f"benchmark {name!r} produced no samples")
    arr = np.asarray(samples, dtype=float)
    result: dict[str, Any] = {
        "name": name,
        "unit": unit,
        "n": len(samples),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
    }
    if reference is not None:
        result["reference"] = reference
        result["ratio"] = result["p50"] / reference if reference else None
    result.update(extra)
    return result


def value(name: str, unit: str, n: int, val: float, **extra: Any) -> dict[str, Any]:
    """A single-valued measurement (a rate, a success ratio) over ``n`` trials."""
    result: dict[str, Any] = {"name": name, "unit": unit, "n": n, "value": val}
    result.update(extra)
    return result
