"""The case table of `fedpdmm.aggregators`: every registered rule and pre-aggregation with sample
parameters, and invalid inputs with the error message (a substring) they must raise.

`tests/test_aggregators.py` runs one generic suite over it and fails if a registered name has
no case here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Case:
    """A valid rule (`get`) or pre-aggregation (`get_pre`) and parameters to build it with."""

    name: str
    params: dict[str, Any] = field(default_factory=dict)
    pre: bool = False

    @property
    def id(self) -> str:
        args = ",".join(f"{key}={value}" for key, value in self.params.items())
        return f"{self.name}({args})"


@dataclass(frozen=True)
class Invalid:
    """Parameters that must fail with `ConfigError` containing `message`.

    `n`: the rule is built, then fails for n rows (`check(n)` and a call); None: building fails.
    """

    name: str
    params: dict[str, Any]
    n: int | None
    message: str
    pre: bool = False

    @property
    def id(self) -> str:
        return f"{self.name}-{self.params}-n={self.n}"


RULE_CASES = (
    Case("mean"),
    Case("median"),
    Case("trimmed_mean", {"f": 2}),
    Case("meamed", {"f": 2}),
    Case("krum", {"f": 2}),
    Case("multi_krum", {"f": 2, "m": 4}),
    Case("geometric_median", {"eps": 1e-8, "max_iter": 50, "tol": 1e-10}),
    Case("bulyan", {"f": 1}),
    Case("centered_clipping", {"tau": 1.0, "iters": 3}),
    Case("foolsgold"),
    Case("dnc", {"f": 2, "niters": 3, "b": 3}),
    Case("fltrust"),
)

PRE_CASES = (
    Case("nnm", {"f": 2}, pre=True),
    Case("bucketing", {"s": 2}, pre=True),
    Case("clip", {"tau": 1.0}, pre=True),
    Case("arc", {"f": 2}, pre=True),
)

INVALID_CASES = (
    # parameters that do not fit the number of rows
    Invalid(
        "bulyan", {"f": 2}, 10, "bulyan needs n >= 4f + 3, got n=10, f=2: lower f to at most 1"
    ),
    Invalid(
        "krum", {"f": 2}, 6, "krum needs n >= 2f + 3, got n=6, f=2, power=2.0: lower f to at most 1"
    ),
    Invalid(
        "krum", {"f": 0}, 2, "krum needs n >= 2f + 3, got n=2, f=0, power=2.0: aggregate more rows"
    ),
    Invalid("multi_krum", {"f": 3}, 8, "multi_krum needs n >= 2f + 3, got n=8, f=3, m=None"),
    Invalid("multi_krum", {"f": 1, "m": 9}, 8, "multi_krum needs m <= n, got n=8, f=1, m=9"),
    Invalid("trimmed_mean", {"f": 3}, 6, "trimmed_mean needs n > 2f, got n=6, f=3"),
    Invalid("meamed", {"f": 3}, 6, "meamed needs n > 2f, got n=6, f=3: lower f to at most 2"),
    Invalid("dnc", {"f": 5}, 5, "dnc needs n > floor(c f), got n=5, f=5"),
    Invalid("mean", {}, 0, "mean needs at least one row, got n=0"),
    Invalid("nnm", {"f": 4}, 4, "nnm needs n > f, got n=4, f=4: lower f to at most 3", pre=True),
    Invalid("arc", {"f": 4}, 4, "arc needs n > f, got n=4, f=4", pre=True),
    Invalid("bucketing", {"s": 5}, 4, "bucketing needs s <= n, got n=4, s=5", pre=True),
    # bad values
    Invalid("trimmed_mean", {"f": -1}, None, "trimmed_mean: f must be an integer >= 0, got f=-1"),
    Invalid("krum", {"f": 1.5}, None, "krum: f must be an integer >= 0, got f=1.5"),
    Invalid("krum", {"f": True}, None, "krum: f must be an integer >= 0, got f=True"),
    Invalid("multi_krum", {"f": 1, "m": 0}, None, "multi_krum: m must be an integer >= 1, got m=0"),
    Invalid("centered_clipping", {"tau": 0}, None, "tau must be a finite number > 0, got tau=0"),
    Invalid(
        "centered_clipping", {"tau": "1"}, None, "tau must be a finite number > 0, got tau='1'"
    ),
    Invalid("centered_clipping", {"tau": 1.0, "iters": 0}, None, "iters must be an integer >= 1"),
    Invalid(
        "geometric_median", {"eps": -1.0}, None, "eps must be a finite number > 0, got eps=-1.0"
    ),
    Invalid("geometric_median", {"tol": float("nan")}, None, "tol must be a finite number >= 0"),
    Invalid("geometric_median", {"max_iter": 0}, None, "max_iter must be an integer >= 1"),
    Invalid("dnc", {"f": 1, "c": 0.0}, None, "dnc: c must be a finite number > 0, got c=0.0"),
    Invalid("dnc", {"f": 1, "b": 0}, None, "dnc: b must be an integer >= 1, got b=0"),
    Invalid("dnc", {"f": 1, "niters": 0}, None, "dnc: niters must be an integer >= 1"),
    Invalid("foolsgold", {"confidence": -2}, None, "confidence must be a finite number > 0"),
    Invalid("clip", {"tau": float("inf")}, None, "clip: tau must be a finite number > 0", pre=True),
    Invalid("bucketing", {"s": 0}, None, "bucketing: s must be an integer >= 1, got s=0", pre=True),
    Invalid("nnm", {"f": -3}, None, "nnm: f must be an integer >= 0, got f=-3", pre=True),
    # unknown names, unknown or missing parameters
    Invalid("krum", {}, None, "krum: missing parameter(s) f; valid parameters: f (required)"),
    Invalid("krum", {"f": 1, "q": 2}, None, "krum: unknown parameter(s) q; valid parameters: f"),
    Invalid("krum", {"f": 1, "power": 0}, None, "krum: power must be a finite number > 0"),
    Invalid("median", {"f": 1}, None, "median: unknown parameter(s) f; valid parameters: none"),
    Invalid(
        "geometric_median",
        {"iters": 3},
        None,
        "geometric_median: unknown parameter(s) iters; valid parameters: eps",
    ),
    Invalid(
        "trimed_mean", {}, None, "unknown aggregation rule 'trimed_mean'; valid names: mean, median"
    ),
    Invalid("nnm", {"f": 1}, None, "'nnm' is a pre-aggregation, use get_pre"),
    Invalid(
        "nope", {}, None, "unknown pre-aggregation 'nope'; valid names: nnm, bucketing", pre=True
    ),
    Invalid("mean", {}, None, "'mean' is a rule, use get", pre=True),
)
