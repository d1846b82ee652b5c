"""Cells (setting x algorithm x attack x target x Byzantine count, one series per seed) and the
accuracy and worst-case tables built from them."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from fedpdmm.store import Results

OWN_COLUMNS = (
    "seed",
    "algorithms",
    "attacks",
    "attack.target",
    "attack.fraction",
    "attack.num_byzantine",
)


@dataclass
class Cell:
    """One setting x algorithm x attack x target x Byzantine count, with one series per seed."""

    setting: tuple[tuple[str, Any], ...]
    algorithm: str
    attack: str
    target: str
    num_byzantine: int
    num_clients: int
    series: dict[Any, list[dict[str, Any]]] = field(default_factory=dict)  # seed -> rows by round

    @property
    def method(self) -> str:
        """The algorithm with its setting: `pdmm` or `pdmm (pdmm.c=0.4)`."""
        extra = ", ".join(f"{key}={value}" for key, value in self.setting)
        return f"{self.algorithm} ({extra})" if extra else self.algorithm

    @property
    def finals(self) -> list[float]:
        return [accuracy_of(rows[-1]) for rows in self.series.values()]

    @property
    def bests(self) -> list[float]:
        return [max(accuracy_of(row) for row in rows) for rows in self.series.values()]

    @property
    def diverged(self) -> int:
        """Seeds whose last recorded test loss is not finite."""
        return sum(not _finite(rows[-1].get("test_loss")) for rows in self.series.values())


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def accuracy_of(row: dict[str, Any]) -> float:
    """The row's test accuracy as a fraction; a missing or non-finite value counts as 0."""
    value = row.get("test_accuracy")
    return float(value) if _finite(value) else 0.0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (NaN for fewer than two values)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else float("nan")


def setting_axes(axes: Sequence[str]) -> list[str]:
    """The grid axes that define a setting (see `fedpdmm.report`)."""
    return [axis for axis in axes if axis not in OWN_COLUMNS]


def cells(results: Results) -> list[Cell]:
    """Group the rows into cells, sorted by setting, attack, target, Byzantine count, algorithm
    (each in order of first appearance); the rows of a series by round."""
    settings = setting_axes(results.axes)
    found: dict[tuple, Cell] = {}
    for row in results.rows:
        setting = tuple((axis, row.get(axis, "")) for axis in settings)
        key = (setting, row["algorithm"], row["attack"], row["target"], int(row["num_byzantine"]))
        cell = found.get(key)
        if cell is None:
            cell = found[key] = Cell(*key, num_clients=int(row.get("num_clients") or 0))
        seed = row.get("seed", row.get("run"))
        series = cell.series.setdefault(seed, [])
        if not series or series[0].get("run") == row.get("run"):
            series.append(row)
    for cell in found.values():
        for rows in cell.series.values():
            rows.sort(key=lambda row: row["round"])
    first: dict[Any, int] = {}
    for cell in found.values():
        for part in (cell.setting, cell.attack, cell.target, cell.algorithm):
            first.setdefault(part, len(first))
    return sorted(
        found.values(),
        key=lambda c: (
            first[c.setting],
            first[c.attack],
            first[c.target],
            c.num_byzantine,
            first[c.algorithm],
        ),
    )


# ---------------------------------------------------------------------------- tables


def _pct(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:.2f}" + ("" if math.isnan(std) else f" ± {100 * std:.2f}")


def accuracy_table(found: Sequence[Cell], settings: Sequence[str]) -> tuple[list[str], list[list]]:
    """Header and rows: final and best accuracy (%) mean ± std over seeds, per cell."""
    header = [
        "algorithm",
        *settings,
        "attack",
        "target",
        "Byzantine",
        "seeds",
        "final acc (%)",
        "best acc (%)",
        "diverged",
    ]
    rows = []
    for cell in found:
        rows.append(
            [
                cell.algorithm,
                *[value for _, value in cell.setting],
                cell.attack,
                cell.target,
                cell.num_byzantine,
                len(cell.series),
                _pct(*mean_std(cell.finals)),
                _pct(*mean_std(cell.bests)),
                f"{cell.diverged}/{len(cell.series)}",
            ]
        )
    return header, rows


def worst_cases(found: Sequence[Cell]) -> list[dict[str, Any]]:
    """Per setting x algorithm x Byzantine count: the attacked cell with the lowest mean final
    accuracy (over attacks and targets), beside the same method's accuracy without attack."""
    clean = {(c.setting, c.algorithm): c for c in found if c.attack == "none"}
    groups: dict[tuple, list[Cell]] = {}
    for cell in found:
        if cell.attack != "none":
            groups.setdefault((cell.setting, cell.algorithm, cell.num_byzantine), []).append(cell)
    worst = []
    for (setting, algorithm, count), members in groups.items():
        cell = min(members, key=lambda c: statistics.fmean(c.finals))
        reference = clean.get((setting, algorithm))
        worst.append(
            {
                "cell": cell,
                "method": cell.method,
                "num_byzantine": count,
                "final": mean_std(cell.finals),
                "by": f"{cell.attack} @ {cell.target}",
                "attacks": len(members),
                "clean": mean_std(reference.finals) if reference else (math.nan, math.nan),
            }
        )
    return worst


def worst_case_table(worst: Sequence[dict[str, Any]]) -> tuple[list[str], list[list]]:
    """Header and rows of the worst-case table, one row per `worst_cases` entry."""
    header = [
        "method",
        "Byzantine",
        "worst final acc (%)",
        "worst attack @ target",
        "attack cells",
        "no attack (%)",
    ]
    rows = [
        [
            w["method"],
            w["num_byzantine"],
            _pct(*w["final"]),
            w["by"],
            w["attacks"],
            _pct(*w["clean"]),
        ]
        for w in worst
    ]
    return header, rows
