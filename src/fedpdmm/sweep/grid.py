"""Sweep plans: `--grid` axes, their cartesian product as validated configs, and `sweep.toml`."""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpdmm import config as config_module
from fedpdmm import store
from fedpdmm.errors import ConfigError, FedpdmmError
from fedpdmm.store import SWEEP_FILE, grid_points, run_name, value_label


@dataclass(frozen=True)
class RunSpec:
    """One grid point: its directory name, its grid values (`key -> value`) and its config."""

    name: str
    params: dict[str, Any]
    config: config_module.Config


@dataclass(frozen=True)
class SweepPlan:
    """A base config (resolved, as plain data), the grid axes in order, and their runs."""

    base: dict[str, Any]
    grid: dict[str, list[Any]]
    runs: list[RunSpec]

    @property
    def axes(self) -> list[str]:
        """The grid keys, `seed` included when it is an axis."""
        return list(self.grid)


# ---------------------------------------------------------------------------- grid


def split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets, braces and quotes: `[1,2],[3]` -> `["[1,2]", "[3]"]`."""
    parts, depth, quote, start = [], 0, "", 0
    for index, char in enumerate(text):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if quote or depth != 0:
        raise ConfigError(f"--grid value {text!r} has an unclosed quote or bracket")
    parts.append(text[start:])
    return [part.strip() for part in parts]


def parse_grid(specs: Sequence[str]) -> dict[str, list[Any]]:
    """`["local.lr=0.01,0.05", "attack.target=model,update"]` -> `{"local.lr": [0.01, 0.05], ...}`.

    Each value is read by `fedpdmm.config.parse_value` (TOML, or a bare word as a string).
    """
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid expects key=v1,v2,..., got {spec!r}")
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one --grid")
        texts = split_top_level(text) if text.strip() else []
        if not texts or any(not part for part in texts):
            raise ConfigError(
                f"--grid {key} has an empty value in {text!r}; give values as {key}=v1,v2"
            )
        values = [config_module.parse_value(part) for part in texts]
        if len({repr(value) for value in values}) != len(values):
            raise ConfigError(f"--grid {key} repeats a value in {text!r}")
        grid[key] = values
    return grid


def set_key(raw: dict[str, Any], key: str, value: Any) -> None:
    """Set the dotted `key` of a raw config dict, creating sections on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--grid {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {key: _copy(value) for key, value in data.items()}
    if isinstance(data, list):
        return [_copy(value) for value in data]
    return data


def plan(
    base: config_module.Config, grid: dict[str, list[Any]], seeds: int | None = None
) -> SweepPlan:
    """Every grid point as a validated config; `seeds=N` adds the axis `seed = base.seed + i`.

    Raises `ConfigError` (naming the key and the grid point) before anything runs.
    """
    from fedpdmm.build import check_names

    grid = dict(grid)
    if seeds is not None:
        if seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {seeds}")
        if "seed" in grid:
            raise ConfigError("give the seeds either as --seeds N or as --grid seed=..., not both")
        grid["seed"] = [base.seed + offset for offset in range(seeds)]
    for key, values in grid.items():
        if not values:
            raise ConfigError(f"--grid {key} has no values; give at least one")
    base_raw = config_module.to_dict(base)
    runs, names = [], {}
    for params in grid_points(grid):
        raw = _copy(base_raw)
        for key, value in params.items():
            set_key(raw, key, value)
        if "attack.fraction" in params:
            raw.get("attack", {}).pop("num_byzantine", None)
        if "attack.num_byzantine" in params:
            raw.get("attack", {}).pop("fraction", None)
        try:
            point = config_module.validate(raw)
            check_names(point)
        except ConfigError as error:
            where = ", ".join(f"{k}={value_label(v)}" for k, v in params.items())
            raise ConfigError(f"grid point {where}: {error}") from None
        name = run_name(params)
        if name in names:
            raise ConfigError(
                f"grid points {names[name]} and {params} get the same directory name {name!r}; "
                "make the values differ in letters or digits"
            )
        names[name] = params
        runs.append(RunSpec(name, params, point))
    return SweepPlan(base_raw, grid, runs)


def load_plan(root: Path) -> SweepPlan:
    """The plan stored in `root/sweep.toml` (to resume or index a sweep), validated anew."""
    stored = store.read_sweep_toml(root)
    return plan(config_module.validate(stored["config"]), stored["grid"])


# ---------------------------------------------------------------------------- sweep.toml


def _inline(value: Any) -> str:
    """A TOML inline value; tables keep their key order."""
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_inline(v)}' for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_inline(item) for item in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def sweep_toml(sweep_plan: SweepPlan) -> str:
    """The text of `sweep.toml`: `grid` as `[[key, [values]], ...]` (order kept), then the base."""
    axes = [[key, values] for key, values in sweep_plan.grid.items()]
    head = f"# fedpdmm sweep: grid axes in order, then the base config\ngrid = {_inline(axes)}\n"
    body = config_module.dump_toml({"config": sweep_plan.base})
    return head + "\n" + body


def _first_difference(old: Any, new: Any, path: str = "") -> str | None:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in list(old) + [k for k in new if k not in old]:
            found = _first_difference(old.get(key), new.get(key), f"{path}.{key}" if path else key)
            if found:
                return found
        return None
    return None if old == new else f"{path} (saved {old!r}, now {new!r})"


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to a hidden sibling of `path`, then rename it to `path`."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def prepare(root: Path, sweep_plan: SweepPlan) -> None:
    """Create `root` with its `sweep.toml`, or check that the saved one describes this sweep."""
    text = sweep_toml(sweep_plan)
    if (root / SWEEP_FILE).exists():
        saved = store.read_sweep_toml(root)
        try:
            saved["config"] = config_module.to_dict(config_module.validate(saved["config"]))
        except ConfigError as error:
            raise FedpdmmError(
                f"the sweep saved in {root} no longer validates ({error}); use another --out"
            ) from None
        parsed = tomllib.loads(text)
        now = {
            "grid": {k: v for k, v in parsed["grid"]},
            "config": config_module.to_dict(config_module.validate(parsed["config"])),
        }
        difference = _first_difference(saved, now)
        if difference:
            raise FedpdmmError(
                f"{root} holds a different sweep: {difference}; use another --out, or rerun the "
                "saved sweep with its own config and grid"
            )
        return
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FedpdmmError(f"{root} exists and is not a sweep directory; choose another --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(root / SWEEP_FILE, text)
    except OSError as error:
        raise FedpdmmError(f"cannot create sweep directory {root}: {error.strerror}") from None
