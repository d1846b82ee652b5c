"""Typed, validated experiment configuration: a TOML file plus `--set key=value` overrides.

Every key is documented in the README. A misspelled or ill-typed key is a `ConfigError` that
names the key; nothing is silently ignored.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fedpdmm.errors import ConfigError

TARGETS = ("model", "update", "message")


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False
    )


class DataConfig(_Section):
    name: str = "digits"
    num_clients: int = Field(10, ge=1)
    partition: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: float = Field(0.5, gt=0)
    min_size: int = Field(1, ge=0)
    shards_per_client: int = Field(2, ge=1)
    dir: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(_Section):
    name: Literal["logreg", "mlp", "cnn"] = "mlp"
    hidden: list[int] = Field(default_factory=lambda: [200])

    @field_validator("hidden")
    @classmethod
    def _positive(cls, hidden: list[int]) -> list[int]:
        if any(h < 1 for h in hidden):
            raise ValueError("every hidden size must be >= 1")
        return hidden


class LocalConfig(_Section):
    steps: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(0.05, gt=0)


class PDMMConfig(_Section):
    c: float = Field(0.4, gt=0)
    theta: float = Field(1.0, gt=0, le=1)


class FedAvgConfig(_Section):
    weighting: Literal["uniform", "samples"] = "uniform"


class AlgorithmConfig(_Section):
    """Robust combination for algorithm names without an explicit `+rule` (`fedavg`, `pdmm`)."""

    aggregator: str = "mean"
    pre: list[str] = Field(default_factory=list)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    root_size: int = Field(100, ge=1)


class AttackConfig(_Section):
    num_byzantine: int | None = Field(None, ge=0)
    fraction: float | None = Field(None, ge=0, le=1)
    target: Literal["model", "update", "message"] | list[Literal["model", "update", "message"]] = (
        "message"
    )
    sigma: float = Field(0.1, gt=0)
    mode: Literal["add", "replace"] = "add"
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_count(self) -> AttackConfig:
        if self.num_byzantine is not None and self.fraction is not None:
            raise ValueError("set attack.num_byzantine or attack.fraction, not both")
        return self

    @property
    def targets(self) -> list[str]:
        targets = [self.target] if isinstance(self.target, str) else list(self.target)
        if not targets:
            raise ConfigError("attack.target is an empty list: give at least one target")
        return targets


class TopologyConfig(BaseModel):
    """`name = "server"`: a server and n clients. Any graph name (`fedpdmm list topologies`):
    peer-to-peer among the n clients; further keys are the graph's parameters (`p`, `radius`)."""

    model_config = ConfigDict(
        extra="allow", validate_assignment=True, strict=True, allow_inf_nan=False
    )
    name: str = "server"

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Config(_Section):
    seed: int = 0
    rounds: int = Field(50, ge=1)
    eval_every: int = Field(5, ge=1)
    algorithms: list[str] = Field(default_factory=list)
    attacks: list[str] = Field(default_factory=lambda: ["none", "sign_flip"])
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    pdmm: PDMMConfig = Field(default_factory=PDMMConfig)
    fedavg: FedAvgConfig = Field(default_factory=FedAvgConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)

    @property
    def decentralized(self) -> bool:
        return self.topology.name != "server"

    @model_validator(mode="before")
    @classmethod
    def _default_algorithms(cls, raw: Any) -> Any:
        """Without `algorithms`: pdmm and fedavg with a server, pdmm and dsgd on a graph."""
        if isinstance(raw, dict) and "algorithms" not in raw:
            topology = raw.get("topology", {})
            graph = isinstance(topology, dict) and topology.get("name", "server") != "server"
            raw = {**raw, "algorithms": ["pdmm", "dsgd"] if graph else ["pdmm", "fedavg"]}
        return raw

    @field_validator("algorithms", "attacks")
    @classmethod
    def _non_empty(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("the list is empty: give at least one name")
        if len(set(names)) != len(names):
            raise ValueError(f"names repeat in {names}")
        return names

    @property
    def num_byzantine(self) -> int:
        """Byzantine clients in attacked runs: `attack.num_byzantine` or the fraction (floor)."""
        if self.attack.num_byzantine is not None:
            return self.attack.num_byzantine
        if self.attack.fraction is not None:
            return int(self.attack.fraction * self.data.num_clients + 1e-9)
        return min(2, self.data.num_clients - 1)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.num_byzantine >= self.data.num_clients:
            given = (
                f"attack.num_byzantine={self.attack.num_byzantine}"
                if self.attack.fraction is None
                else f"attack.fraction={self.attack.fraction} ({self.num_byzantine} clients)"
            )
            raise ValueError(
                f"{given} leaves no honest client among data.num_clients="
                f"{self.data.num_clients}; at least one client must be honest"
            )
        return self


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if "[" not in str(part))
    kind = first["type"]
    if kind == "extra_forbidden":
        parent = key.rpartition(".")[0]
        section = _section_fields(parent)
        valid = ", ".join(section) if section else ""
        where = f"[{parent}]" if parent else "the top level"
        return f"unknown config key '{key}' (valid keys in {where}: {valid})"
    message = first["msg"]
    if kind.startswith("value_error"):
        message = message.removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if isinstance(given, dict) or key == "" else f", got {given!r}"
    return f"config key '{key}': {message}{shown}" if key else f"config: {message}"


def _section_fields(dotted: str) -> list[str]:
    model: type[BaseModel] = Config
    for part in filter(None, dotted.split(".")):
        field = model.model_fields.get(part)
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def validate(raw: dict[str, Any]) -> Config:
    """Build a `Config` from a nested dict, raising a one-line `ConfigError` on any problem."""
    try:
        return Config.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_one_line(error)) from None


def parse_value(text: str) -> Any:
    """Read a `--set` value as a TOML value; a bare word is a string (`lr=0.05`, `name=mnist`)."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        if text and not any(ch in text for ch in "[]{}\"'=,"):
            return text
        raise ConfigError(
            f'cannot read {text!r} as a TOML value: quote strings and write lists as ["a", "b"]'
        ) from None


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `key.sub=value` assignment to a nested dict in place."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parse_value(text.strip())


def presets() -> dict[str, Path]:
    """The preset configs shipped with the package (`configs/` in the repository), by name."""
    folder = Path(__file__).parent / "presets"
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (or a preset, by name) into a dict; one-line errors."""
    path = Path(path)
    if not path.exists() and str(path) in presets():
        path = presets()[str(path)]
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (presets: {', '.join(presets())})"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a directory, not a TOML file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The validated config from an optional TOML file and `--set` overrides, applied in order."""
    raw = read_toml(path) if path is not None else {}
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw)


def to_dict(config: Config) -> dict[str, Any]:
    """The fully resolved config as plain data (every default written out; `None` left out)."""
    return config.model_dump(mode="json", exclude_none=True)


def dump_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of TOML-compatible values as TOML text (tables after plain keys)."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(table: dict[str, Any], prefix: list[str], lines: list[str]) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (plain or not tables):
        lines.append(f"\n[{'.'.join(prefix)}]")
    for key, value in plain.items():
        lines.append(f"{key} = {_toml_value(value)}")
    for key, value in tables.items():
        _dump_table(value, [*prefix, key], lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
