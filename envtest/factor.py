"""A time factor read from the environment, for harnesses that wait longer on a loaded machine:
the test kit (`PLANELINK_TEST_TIMEOUT_FACTOR`) and the bench (`PLANELINK_BENCH_WAIT_FACTOR`).

It only parses: never a product setting, and never a target a measurement is judged by.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def read_factor(environ: Mapping[str, str], variable: str) -> float:
    """`environ[variable]` as a finite number above 0 (1 when unset or empty); ValueError,
    naming the variable, for anything else."""
    raw = environ.get(variable, "").strip() or "1"
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r} is not a number") from None
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"{variable}={raw!r}: the factor must be a finite number above 0")
    return factor
