"""Numeric bounds of config values: floats that reach float32 tensors, integers that fit int64."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Annotated, Any

from pydantic import AfterValidator
from pydantic_core import PydanticCustomError

FLOAT32_MAX = 3.4028234663852886e38
"""The largest finite float32: every float that reaches the float32 tensors of training."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_HIDDEN = 1_000_000
"""The widest MLP hidden layer accepted (`fedpdmm.resources` checks the whole model's memory)."""


def float32_value(value: float) -> float:
    if abs(value) > FLOAT32_MAX:
        raise ValueError(
            f"must be at most {FLOAT32_MAX:.4g} in magnitude (training uses float32 numbers)"
        )
    return value


def int64_value(value: int) -> int:
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError("must fit in a signed 64-bit integer (-2**63 <= value < 2**63)")
    return value


Float32 = Annotated[float, AfterValidator(float32_value)]
Int64 = Annotated[int, AfterValidator(int64_value)]


def numbers_in(value: Any, path: str = "") -> Iterator[tuple[str, int | float]]:
    """(dotted path, number) for every number inside nested tables and lists."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from numbers_in(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from numbers_in(item, f"{path}[{index}]")
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield path, value


def table_error(path: str, reason: str) -> PydanticCustomError:
    return PydanticCustomError("table_value", "{reason}", {"path": path, "reason": reason})


def check_numbers(table: dict[str, Any], *, finite: bool) -> dict[str, Any]:
    """Integers of a free-form table fit in int64, finite floats in float32; with `finite`, no
    NaN or Inf (plug-ins that accept them, like the `inf` attack, check them themselves)."""
    for path, value in numbers_in(table):
        if isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:
            raise table_error(path, f"must fit in a signed 64-bit integer, got {value}")
        if isinstance(value, float) and not math.isfinite(value) and finite:
            raise table_error(path, f"must be a finite number, got {value}")
        if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
            raise table_error(
                path,
                f"must be at most {FLOAT32_MAX:.4g} in magnitude (training uses float32 "
                f"numbers), got {value!r}",
            )
    return table
