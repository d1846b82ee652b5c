"""Typed, validated experiment configuration: a TOML file plus `--set key=value` overrides.

Every key is documented in the README. A misspelled or ill-typed key is a `ConfigError` that
names the key; nothing is silently ignored.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, get_origin

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from fedpdmm.config_bounds import (
    INT64_MAX as INT64_MAX,
)
from fedpdmm.config_bounds import (
    MAX_HIDDEN as MAX_HIDDEN,
)
from fedpdmm.config_bounds import (
    Float32,
    Int64,
    check_numbers,
    table_error,
)
from fedpdmm.errors import ConfigError
from fedpdmm.targets import TARGETS as TARGETS
from fedpdmm.tomlfiles import dump_toml as dump_toml
from fedpdmm.tomlfiles import presets as presets
from fedpdmm.tomlfiles import read_toml as read_toml
from fedpdmm.tomlfiles import toml_value as toml_value


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False
    )


class DataConfig(_Section):
    """`partition`: how the training set is split (`fedpdmm.data.partition`); `normalize`:
    standardise every input channel with the training set's mean and standard deviation;
    `byzantine_data = false`: split the training set over the honest clients only (the
    Byzantine clients of attacked runs hold no data, as in ByzFL and Karimireddy et al.);
    `client_samples`: each client keeps a seeded random subset of at most this many of its
    samples (None: all)."""

    name: str = "digits"
    num_clients: Int64 = Field(10, ge=1)
    partition: Literal["iid", "dirichlet", "shards", "sorted", "communities"] = "iid"
    normalize: bool = False
    byzantine_data: bool = True
    client_samples: Int64 | None = Field(None, ge=1)
    alpha: Float32 = Field(0.5, gt=0)
    min_size: Int64 = Field(1, ge=0)
    shards_per_client: Int64 = Field(2, ge=1)
    dir: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("options")
    @classmethod
    def _option_numbers(cls, options: dict[str, Any]) -> dict[str, Any]:
        return check_numbers(options, finite=True)


class ModelConfig(_Section):
    """`hidden`: hidden linear widths (None: [200] for `mlp`, [120, 84] for `cnn`). The `cnn`
    keys (`fedpdmm.models.ConvSpec`): `channels` conv widths, `kernel`, `padding` (None:
    kernel // 2), `pool` ("each": a 2x2 max-pool after every convolution, "last": after the
    last), `dropout` (after the convolutions, then after each hidden layer; one value or one per
    place), `last_conv_relu` (false: no ReLU between the last convolution and its pooling),
    `dropout_masks` ("client": each client draws its own masks; "shared": one mask per step for
    all clients; "fixed": one mask for all clients and the whole run, as the bucketing paper's
    simulator), `conv_dropout` ("element", or "channel": the dropout after the convolutions
    drops whole channels, `nn.Dropout2d`)."""

    name: Literal["logreg", "mlp", "cnn"] = "mlp"
    hidden: list[int] | None = None
    channels: list[int] = Field(default_factory=lambda: [6, 16])
    kernel: Int64 = Field(5, ge=1, le=64)
    padding: Int64 | None = Field(None, ge=0, le=64)
    pool: Literal["each", "last"] = "each"
    dropout: float | list[float] = 0.0
    last_conv_relu: bool = True
    dropout_masks: Literal["client", "shared", "fixed"] = "client"
    conv_dropout: Literal["element", "channel"] = "element"

    @field_validator("hidden", "channels")
    @classmethod
    def _positive(cls, hidden: list[int] | None) -> list[int] | None:
        if hidden is None:
            return hidden
        if any(h < 1 for h in hidden):
            raise ValueError("every size must be >= 1")
        if any(h > MAX_HIDDEN for h in hidden):
            raise ValueError(f"every size must be at most {MAX_HIDDEN:,}")
        return hidden

    @field_validator("channels")
    @classmethod
    def _some_channels(cls, channels: list[int]) -> list[int]:
        if not channels:
            raise ValueError("give at least one convolution width")
        return channels

    @field_validator("dropout")
    @classmethod
    def _probabilities(cls, dropout: float | list[float]) -> float | list[float]:
        values = dropout if isinstance(dropout, list) else [dropout]
        if not values or any(not 0 <= p < 1 for p in values):
            raise ValueError("dropout probabilities must be in [0, 1)")
        return dropout

    def conv(self):
        """The `fedpdmm.models.ConvSpec` of these keys."""
        from fedpdmm.models import ConvSpec

        dropout = self.dropout if isinstance(self.dropout, list) else [self.dropout]
        return ConvSpec(
            tuple(self.channels),
            self.kernel,
            self.padding,
            self.pool,
            tuple(dropout),
            last_relu=self.last_conv_relu,
            dropout_masks=self.dropout_masks,
            channel_dropout=self.conv_dropout == "channel",
        )

    def widths(self) -> tuple[int, ...] | None:
        return None if self.hidden is None else tuple(self.hidden)


class LocalConfig(_Section):
    """The clients' local optimizer: `torch.optim.SGD` with `momentum` (heavy ball, dampening
    0; its buffer is client state kept across rounds) and `weight_decay` (L2, added to the
    gradient), both 0 by default."""

    steps: Int64 = Field(10, ge=1)
    batch_size: Int64 = Field(32, ge=1)
    lr: Float32 = Field(0.05, gt=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    weight_decay: Float32 = Field(0.0, ge=0)


class PDMMConfig(_Section):
    c: Float32 = Field(0.4, gt=0)
    theta: float = Field(1.0, gt=0, le=1)


class GossipConfig(_Section):
    """`weights`: gossip's mixing weights on an edge i-j, `metropolis` 1 / (1 + max(d_i, d_j))
    or `max_degree` 1 / (1 + the graph's largest degree); the node keeps the rest."""

    weights: Literal["metropolis", "max_degree"] = "metropolis"


class FedAvgConfig(_Section):
    weighting: Literal["uniform", "samples"] = "uniform"


class FedProxConfig(_Section):
    mu: Float32 = Field(0.01, ge=0)


class ScaffoldConfig(_Section):
    server_lr: Float32 = Field(1.0, gt=0)


class AlgorithmConfig(_Section):
    """Robust combination for algorithm names without an explicit `+rule` (`fedavg`, `pdmm`)."""

    aggregator: str = "mean"
    pre: list[str] = Field(default_factory=list)
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    root_size: Int64 = Field(100, ge=1)

    @field_validator("params")
    @classmethod
    def _param_numbers(cls, params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return check_numbers(params, finite=False)


class AttackConfig(_Section):
    num_byzantine: Int64 | None = Field(None, ge=0)
    fraction: float | None = Field(None, ge=0, le=1)
    target: Literal["model", "update", "message"] | list[Literal["model", "update", "message"]] = (
        "message"
    )
    sigma: Float32 = Field(0.1, gt=0)
    mode: Literal["add", "replace"] = "add"
    state: Literal["honest", "received"] = "honest"
    params: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _param_numbers(cls, params: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return check_numbers(params, finite=False)

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


class EvalConfig(_Section):
    """What an evaluation scores. The global model (with a server) is always scored on the whole
    test set. `train_samples`: the size of the training-loss probe, a fixed seeded sample of the
    honest clients' training data (`"all"`: all of it). Every honest node's own model is scored
    on a fixed, seeded subsample of `node_samples` test images (and as many probe samples), the
    same for every node and round; `"all"` scores the node models on the whole sets."""

    node_samples: Int64 | Literal["all"] = Field(1000)
    train_samples: Int64 | Literal["all"] = Field(1000)

    @field_validator("node_samples", "train_samples")
    @classmethod
    def _positive(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError('give a positive number of samples, or "all"')
        return value


class NetworkConfig(_Section):
    """An unreliable network (`fedpdmm.channel`): message `loss` probability, per-round
    `participation` probability of each node, and a fraction of `stragglers` per round that run
    `straggler_work` of their K local steps (`"partial"`) or whose messages arrive a round late
    (`"delay"`). The defaults are a reliable network."""

    loss: float = Field(0.0, ge=0, le=1)
    participation: float = Field(1.0, gt=0, le=1)
    stragglers: float = Field(0.0, ge=0, le=1)
    straggler_mode: Literal["partial", "delay"] = "partial"
    straggler_work: float = Field(0.5, gt=0, lt=1)

    @property
    def reliable(self) -> bool:
        return self.loss == 0 and self.participation == 1 and self.stragglers == 0


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

    @model_validator(mode="after")
    def _param_numbers(self) -> TopologyConfig:
        check_numbers(self.params, finite=True)
        return self


class Config(_Section):
    seed: Int64 = 0
    rounds: Int64 = Field(50, ge=1)
    eval_every: Int64 = Field(5, ge=1)
    device: str = "cpu"  # where the tensors live: cpu, cuda, cuda:N (`fedpdmm.devices`)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    algorithms: list[str] = Field(default_factory=list)
    attacks: list[str] = Field(default_factory=lambda: ["none", "sign_flip"])
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    pdmm: PDMMConfig = Field(default_factory=PDMMConfig)
    gossip: GossipConfig = Field(default_factory=GossipConfig)
    fedavg: FedAvgConfig = Field(default_factory=FedAvgConfig)
    fedprox: FedProxConfig = Field(default_factory=FedProxConfig)
    scaffold: ScaffoldConfig = Field(default_factory=ScaffoldConfig)
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig)
    attack: AttackConfig = Field(default_factory=AttackConfig)
    topology: TopologyConfig = Field(default_factory=TopologyConfig)
    network: NetworkConfig = Field(default_factory=NetworkConfig)

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

    @field_validator("device")
    @classmethod
    def _device_name(cls, name: str) -> str:
        from fedpdmm.devices import check_name

        return check_name(name)

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
        if not self.data.byzantine_data and self.fedavg.weighting == "samples":
            raise ValueError(
                "fedavg.weighting='samples' gives the data-less Byzantine clients of "
                "data.byzantine_data=false a weight of 0, which silences them; use "
                "fedavg.weighting='uniform'"
            )
        if self.data.partition == "communities" and not self.decentralized:
            raise ValueError(
                "data.partition='communities' deals labels by the graph's communities and needs "
                "a graph topology (e.g. topology.name='two_cliques')"
            )
        return self

    @model_validator(mode="after")
    def _known_tables(self) -> Config:
        """Parameter tables name rules, pre-aggregations and attacks that exist (used or not)."""
        if self.algorithm.params:
            from fedpdmm import aggregators

            valid = [*aggregators.names(), *aggregators.pre_names()]
            _known_names(self.algorithm.params, valid, "algorithm.params", "aggregation rule")
        if self.attack.params:
            from fedpdmm import attacks

            _known_names(self.attack.params, attacks.names(), "attack.params", "attack")
        return self


def _known_names(tables: dict[str, Any], valid: list[str], where: str, kind: str) -> None:
    for name in tables:
        if name not in valid:
            raise table_error(
                f"{where}.{name}",
                f"there is no {kind} named {name!r}, so its parameters cannot be used; "
                f"valid names: {', '.join(valid)}",
            )


def _printable(text: str) -> str:
    """`text` with control characters escaped, so that a message stays on one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def _one_line(error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if "[" not in str(part))
    kind = first["type"]
    if kind == "table_value":
        context = first.get("ctx", {})
        key = _printable(".".join(filter(None, [key, str(context.get("path", ""))])))
        return f"config key '{key}': {context.get('reason', first['msg'])}"
    key = _printable(key)
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


def parse_value(text: str, key: str | None = None) -> Any:
    """Read a `--set` value as a TOML value; a bare word is a string (`lr=0.05`, `name=mnist`).

    `key`, when given, is named in the error message.
    """
    where = f"--set {key}: " if key else ""
    if not text.strip():
        example = key or "rounds"
        raise ConfigError(
            f"{where}the value is empty; give a TOML value, e.g. {example}=5, "
            f'{example}=mnist or {example}=["a", "b"]'
        )
    try:
        parsed = tomllib.loads(f"value = {text}")
    except tomllib.TOMLDecodeError:
        if not any(ch in text for ch in "[]{}\"'=,\n"):
            return text
        parsed = {}
    if set(parsed) != {"value"}:
        raise ConfigError(
            f"{where}cannot read {text!r} as one TOML value: quote strings and write lists "
            'as ["a", "b"]'
        )
    return parsed["value"]


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `key.sub=value` assignment to a nested dict in place."""
    key, sep, text = assignment.partition("=")
    key = key.strip()
    if not key.isprintable():
        raise ConfigError(f"--set {assignment!r}: the key contains control characters")
    if not sep:
        raise ConfigError(
            f"--set {assignment!r} has no '=': write it as key=value, "
            f"e.g. --set {key or 'rounds'}=5"
        )
    if not key:
        raise ConfigError(
            f"--set {assignment!r} has no key before '=': write it as key=value, "
            "e.g. --set rounds=5"
        )
    parts = [part.strip() for part in key.split(".")]
    if not all(parts):
        raise ConfigError(
            f"--set {key}: the key has an empty part; separate sections and keys by single "
            "dots, e.g. --set data.name=mnist"
        )
    value_key = _value_prefix(parts)
    if value_key is not None:
        raise ConfigError(f"--set {key}: '{value_key}' is a value, not a section")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = parse_value(text.strip(), key)


def _value_prefix(parts: list[str]) -> str | None:
    """The dotted prefix of `parts` that the schema defines as a plain value, if any."""
    model: type[BaseModel] = Config
    for depth, part in enumerate(parts[:-1]):
        field = model.model_fields.get(part)
        if field is None or get_origin(field.annotation) is dict:
            return None
        if not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return ".".join(parts[: depth + 1])
        model = field.annotation
    return None


def load(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """The validated config from an optional TOML file and `--set` overrides, applied in order."""
    raw = read_toml(path) if path is not None else {}
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw)


def to_dict(config: Config) -> dict[str, Any]:
    """The fully resolved config as plain data (every default written out; `None` left out)."""
    return config.model_dump(mode="json", exclude_none=True)
