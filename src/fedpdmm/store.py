"""Saved results, read-only: run directories and sweep directories, without any training code.

A run directory holds `config.toml` (the resolved config) and `metrics.csv` (one row per
algorithm x attack x target x evaluated round). A sweep directory holds `sweep.toml` (grid axes
in order, then the base config), one run directory per grid point (named by `run_name`),
`failed/<run>.txt` (the one-line error of each failed run) and `index.csv` (the finished runs'
metrics rows, each prefixed by its grid values, `run` and `num_clients`).

Nothing here validates names against the registries: results name whatever algorithms, rules and
attacks they were run with. A file that cannot be read as the layout says is a `FedpdmmError`
naming the file and what is wrong.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpdmm.errors import FedpdmmError

SWEEP_FILE = "sweep.toml"
INDEX_FILE = "index.csv"
FAILED_DIR = "failed"
METRICS_FILE = "metrics.csv"
CONFIG_FILE = "config.toml"
MAX_NAME_LENGTH = 120
REQUIRED_COLUMNS = (
    "algorithm",
    "attack",
    "target",
    "round",
    "test_accuracy",
    "test_loss",
    "num_byzantine",
)
"""The metrics columns a report needs; `index.csv` needs `run` too."""
INTEGER_COLUMNS = ("round", "num_byzantine", "num_clients")
NUMBER_COLUMNS = ("test_accuracy", "test_loss")


# ---------------------------------------------------------------------------- names


def value_label(value: Any) -> str:
    """A short text for a grid value: `0.05`, `pdmm+fedavg` for a list, `true` for a bool."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return "+".join(value_label(item) for item in value)
    if isinstance(value, dict):
        return ";".join(f"{key}:{value_label(item)}" for key, item in value.items())
    return str(value)


def run_name(params: dict[str, Any]) -> str:
    """The directory name of a grid point: `local.lr=0.05__seed=1` (unsafe characters as `-`)."""
    if not params:
        return "base"
    text = "__".join(f"{key}={value_label(value)}" for key, value in params.items())
    name = re.sub(r"[^A-Za-z0-9._+=-]", "-", text)
    if len(name) > MAX_NAME_LENGTH or name.startswith("."):
        digest = hashlib.sha256(text.encode()).hexdigest()[:10]
        name = f"{name.lstrip('.')[: MAX_NAME_LENGTH - 12]}~{digest}"
    return name


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the axes, the last axis varying fastest: `[{key: value}, ...]`."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


# ---------------------------------------------------------------------------- files


def parse_value(text: str) -> Any:
    """A CSV cell as an int, else a float, else the text itself."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _check_file(path: Path) -> None:
    if path.is_dir():
        raise FedpdmmError(f"cannot read {path}: it is a directory, not a file")


def read_csv(path: Path, required: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The rows of a results CSV with numbers converted; one-line `FedpdmmError` when the file is
    empty, not UTF-8 text, lacks a `required` column, has a row of the wrong length, or holds a
    non-number in `INTEGER_COLUMNS` / `NUMBER_COLUMNS`."""
    path = Path(path)
    _check_file(path)
    rows = []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames
            if not header:
                raise FedpdmmError(f"cannot read {path}: the file is empty (no header row)")
            missing = [column for column in required if column not in header]
            if missing:
                columns = "column" if len(missing) == 1 else "columns"
                raise FedpdmmError(
                    f"cannot read {path}: the header has no {columns} {', '.join(missing)} "
                    "(not a fedpdmm results file)"
                )
            for row in reader:
                rows.append(_parsed_row(path, reader.line_num, row, len(header)))
    except UnicodeDecodeError:
        raise FedpdmmError(
            f"cannot read {path}: not UTF-8 text (a binary or corrupt file)"
        ) from None
    except csv.Error as error:
        raise FedpdmmError(f"cannot read {path}: malformed CSV ({error})") from None
    except OSError as error:
        raise FedpdmmError(f"cannot read {path}: {error.strerror}") from None
    return rows


def _parsed_row(path: Path, line: int, row: dict, width: int) -> dict[str, Any]:
    if None in row or None in row.values():
        count = width + len(row.get(None, [])) - sum(value is None for value in row.values())
        raise FedpdmmError(
            f"cannot read {path}: line {line} has {count} fields, the header has {width} "
            "(a truncated or corrupt row)"
        )
    parsed = {key: parse_value(value) for key, value in row.items()}
    for column in (*INTEGER_COLUMNS, *NUMBER_COLUMNS):
        value = parsed.get(column)
        if column in parsed and not _is_number(value, integer=column in INTEGER_COLUMNS):
            kind = "an integer" if column in INTEGER_COLUMNS else "a number"
            raise FedpdmmError(
                f"cannot read {path}: line {line}, column {column} is {row[column]!r}, "
                f"expected {kind}"
            )
    return parsed


def _is_number(value: Any, integer: bool) -> bool:
    return isinstance(value, int) if integer else isinstance(value, int | float)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Read a run's `metrics.csv` back, converting numeric columns (see `read_csv`)."""
    return read_csv(path, REQUIRED_COLUMNS)


def read_index(path: Path) -> list[dict[str, Any]]:
    """Read a sweep's `index.csv` back, converting numeric columns (see `read_csv`)."""
    return read_csv(path, ("run", *REQUIRED_COLUMNS))


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; one-line `FedpdmmError` when it cannot be read or parsed."""
    path = Path(path)
    _check_file(path)
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise FedpdmmError(f"cannot read {path}: no such file") from None
    except UnicodeDecodeError:
        raise FedpdmmError(
            f"cannot read {path}: not UTF-8 text (a binary or corrupt file)"
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise FedpdmmError(f"cannot read {path}: not valid TOML ({error})") from None
    except OSError as error:
        raise FedpdmmError(f"cannot read {path}: {error.strerror}") from None


def run_config(run: Path) -> dict[str, Any]:
    """A run's `config.toml` as plain data; `{}` when the run has none."""
    path = Path(run) / CONFIG_FILE
    return read_toml(path) if path.exists() else {}


def read_sweep_toml(root: Path) -> dict[str, Any]:
    """`{"grid": {key: values}, "config": base}` from `root/sweep.toml`."""
    path = Path(root) / SWEEP_FILE
    if not path.exists():
        raise FedpdmmError(f"{root} is not a sweep directory (no {SWEEP_FILE})")
    data = read_toml(path)
    axes = data.get("grid", [])
    pairs = isinstance(axes, list) and all(
        isinstance(axis, list)
        and len(axis) == 2
        and isinstance(axis[0], str)
        and isinstance(axis[1], list)
        for axis in axes
    )
    if not pairs:
        raise FedpdmmError(f"cannot read {path}: grid must be a list of [key, [values]] pairs")
    if not isinstance(data.get("config"), dict):
        raise FedpdmmError(f"cannot read {path}: no [config] table (the base config)")
    return {"grid": {key: values for key, values in axes}, "config": data["config"]}


# ---------------------------------------------------------------------------- sweeps


def is_finished(root: Path, name: str) -> bool:
    """A run is finished when its directory exists under the final name with its metrics.csv."""
    return (Path(root) / name / METRICS_FILE).is_file()


@dataclass(frozen=True)
class StoredRun:
    """One grid point of a saved sweep: its directory name and grid values (`key -> value`)."""

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class StoredSweep:
    """A saved sweep as `sweep.toml` describes it: the grid axes in order and the base config."""

    root: Path
    grid: dict[str, list[Any]]
    base: dict[str, Any]

    @property
    def axes(self) -> list[str]:
        """The grid keys, `seed` included when it is an axis."""
        return list(self.grid)

    @property
    def runs(self) -> list[StoredRun]:
        """Every grid point, in the order the sweep runs them."""
        return [StoredRun(run_name(params), params) for params in grid_points(self.grid)]


def read_sweep(root: Path) -> StoredSweep:
    """The sweep saved in `root` (not validated against the current config schema or names)."""
    stored = read_sweep_toml(root)
    return StoredSweep(Path(root), stored["grid"], stored["config"])


def run_directories(root: Path) -> list[Path]:
    """The finished run directories of the sweep in `root`, in grid order."""
    stored = read_sweep(root)
    return [stored.root / run.name for run in stored.runs if is_finished(root, run.name)]


def _lookup(data: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _index_cell(value: Any) -> Any:
    """A grid value as an index cell: numbers and strings as they are, anything else as a label."""
    plain = isinstance(value, int | float | str) and not isinstance(value, bool)
    return value if plain else value_label(value)


def _setting(key: str, sources: list[tuple[Path, dict[str, Any]]]) -> tuple[Any, Path | None]:
    """`key` (dotted) from the first source that has it (flat `{dotted key: value}` or nested),
    with that source's file; `(0, None)` when none has it."""
    for path, data in sources:
        value = data[key] if key in data else _lookup(data, key)
        if value is not None:
            return value, path
    return 0, None


def _num_clients(sources: list[tuple[Path, dict[str, Any]]]) -> int:
    value, path = _setting("data.num_clients", sources)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FedpdmmError(
            f"cannot read {path}: data.num_clients is {value!r}, expected an integer"
        )
    return value


def index_rows(stored: StoredSweep) -> list[dict[str, Any]]:
    """One row per finished run and metrics row: grid values (and `seed` when it is not an axis),
    `run`, `num_clients`, then the run's metrics.csv columns.

    `seed` and `num_clients` come from the run's `config.toml`, else from its grid values, else
    from the base config. A run directory whose `metrics.csv` is not a file is an error.
    """
    rows = []
    for run in stored.runs:
        folder = stored.root / run.name
        metrics = folder / METRICS_FILE
        if not metrics.is_file():
            _check_file(metrics)
            continue
        sweep_file = stored.root / SWEEP_FILE
        sources = [
            (folder / CONFIG_FILE, run_config(folder)),
            (sweep_file, run.params),
            (sweep_file, stored.base),
        ]
        grid_values = {key: _index_cell(value) for key, value in run.params.items()}
        grid_values.setdefault("seed", _setting("seed", sources)[0])
        clients = _num_clients(sources)
        for row in read_metrics(metrics):
            rows.append({**grid_values, "run": run.name, "num_clients": clients, **row})
    return rows


def failed_runs(root: Path) -> dict[str, str]:
    """Run name -> recorded one-line error, for the runs whose last attempt failed."""
    folder = Path(root) / FAILED_DIR
    if not folder.is_dir():
        return {}
    failed = {}
    for path in sorted(folder.glob("*.txt")):
        try:
            failed[path.stem] = first_line(path.read_text(errors="replace"))
        except OSError as error:
            raise FedpdmmError(f"cannot read {path}: {error.strerror}") from None
    return failed


def first_line(text: str) -> str:
    """The first line of `text` without surrounding blanks ("" for blank text)."""
    return text.strip().splitlines()[0] if text.strip() else ""


# ---------------------------------------------------------------------------- any results


@dataclass(frozen=True)
class Results:
    """Index rows (one per run x combination x evaluated round) and the grid axes of the sweep."""

    rows: list[dict[str, Any]]
    axes: list[str]
    source: Path


def load_results(path: Path) -> Results:
    """Read a sweep directory (rebuilding its index from the finished runs), a directory holding
    only an `index.csv`, or a single run directory (`metrics.csv` and `config.toml`)."""
    path = Path(path)
    if (path / SWEEP_FILE).exists():
        stored = read_sweep(path)
        return Results(index_rows(stored), stored.axes, path)
    if (path / INDEX_FILE).exists():
        rows = read_index(path / INDEX_FILE)
        columns = list(rows[0]) if rows else []
        axes = columns[: columns.index("run")] if "run" in columns else []
        return Results(rows, axes, path)
    if (path / METRICS_FILE).exists():
        sources = [(path / CONFIG_FILE, run_config(path))]
        extra = {
            "seed": _setting("seed", sources)[0],
            "run": path.name,
            "num_clients": _num_clients(sources),
        }
        return Results([{**extra, **row} for row in read_metrics(path / METRICS_FILE)], [], path)
    raise FedpdmmError(
        f"{path} holds no results (no {SWEEP_FILE}, {INDEX_FILE} or {METRICS_FILE}); "
        "give a sweep or run directory"
    )
