"""Specification of `fedpdmm.config`: defaults, TOML file plus `--set` overrides read as TOML
values, one-line errors that name the key, impossible settings, and a lossless `dump_toml`."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest

from fedpdmm import config
from fedpdmm.errors import ConfigError


def load_error(*overrides: str, path: Path | None = None) -> str:
    """The one-line message of the ConfigError that loading raises."""
    with pytest.raises(ConfigError) as caught:
        config.load(path, list(overrides))
    message = str(caught.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# Defaults
# ---------------------------------------------------------------------------------------------


def test_defaults_are_valid_and_are_the_embedded_default_run() -> None:
    cfg = config.load()
    assert cfg == config.validate({}) == config.Config()
    assert cfg.data.name == "digits"
    assert cfg.data.num_clients == 10
    assert cfg.num_byzantine == 2
    assert cfg.algorithms == ["pdmm", "fedavg"]
    assert cfg.attacks == ["none", "sign_flip"]
    assert 0 < cfg.pdmm.theta <= 1 and cfg.pdmm.c > 0
    assert cfg.fedavg.weighting == "uniform"


# ---------------------------------------------------------------------------------------------
# File plus overrides
# ---------------------------------------------------------------------------------------------


def test_file_then_overrides_in_order(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text(
        'rounds = 7\nalgorithms = ["fedavg"]\n\n[local]\nlr = 0.1\nsteps = 3\n\n'
        '[data]\nname = "synthetic"\n'
    )
    cfg = config.load(path, ["local.lr=0.2", "rounds=9", "local.lr=0.3"])
    assert cfg.local.lr == 0.3
    assert cfg.rounds == 9
    assert cfg.local.steps == 3
    assert cfg.algorithms == ["fedavg"]
    assert cfg.data.name == "synthetic"
    assert cfg.data.num_clients == 10


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0.05", 0.05),
        ("5", 5),
        ("1e-3", 1e-3),
        ("true", True),
        ('["pdmm", "fedavg"]', ["pdmm", "fedavg"]),
        ('"quoted word"', "quoted word"),
        ("mnist", "mnist"),
        ("fashion_mnist", "fashion_mnist"),
        ("/data/sets", "/data/sets"),
        ("{ z = 2.0 }", {"z": 2.0}),
    ],
)
def test_set_values_are_read_as_toml_and_a_bare_word_as_a_string(text: str, expected) -> None:
    value = config.parse_value(text)
    assert value == expected
    assert type(value) is type(expected)


def test_set_values_reach_the_config_with_their_types() -> None:
    cfg = config.load(
        None,
        [
            "local.lr=0.05",
            'algorithms=["fedavg", "pdmm"]',
            "data.name=mnist",
            "data.num_clients=20",
            "attack.params.alie.z=1.5",
        ],
    )
    assert cfg.local.lr == 0.05 and isinstance(cfg.local.lr, float)
    assert cfg.algorithms == ["fedavg", "pdmm"]
    assert cfg.data.name == "mnist"
    assert cfg.data.num_clients == 20
    assert cfg.attack.params == {"alie": {"z": 1.5}}


@pytest.mark.parametrize(
    "assignment, expected",
    [
        ("rounds", "key=value"),
        ("=5", "key=value"),
        ('algorithms=["pdmm"', "cannot read"),
        ("rounds.deep=1", "'rounds' is a value, not a section"),
    ],
)
def test_malformed_set_assignments_are_config_errors(assignment: str, expected: str) -> None:
    raw = {"rounds": 3} if assignment.startswith("rounds.") else {}
    with pytest.raises(ConfigError, match=expected) as caught:
        config.apply_override(raw, assignment)
    assert "\n" not in str(caught.value)


def test_missing_and_invalid_files_are_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    assert str(missing) in load_error(path=missing)
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    message = load_error(path=bad)
    assert str(bad) in message and "not valid TOML" in message
    assert "is a directory" in load_error(path=tmp_path)


# ---------------------------------------------------------------------------------------------
# Unknown keys and ill-typed values
# ---------------------------------------------------------------------------------------------


def test_unknown_top_level_key_is_named_with_the_valid_keys() -> None:
    message = load_error("round=5")
    assert "'round'" in message
    for key in ("seed", "rounds", "eval_every", "algorithms", "attacks", "data", "local"):
        assert key in message


@pytest.mark.parametrize(
    "assignment, key, valid",
    [
        ("local.learning_rate=0.1", "local.learning_rate", ("steps", "batch_size", "lr")),
        ("pdmm.rho=1.0", "pdmm.rho", ("c", "theta")),
        ("data.clients=5", "data.clients", ("name", "num_clients", "partition", "alpha")),
        ("attack.count=2", "attack.count", ("num_byzantine", "fraction", "target", "sigma")),
    ],
)
def test_unknown_nested_key_is_named_with_the_valid_keys(
    assignment: str, key: str, valid: tuple[str, ...]
) -> None:
    message = load_error(assignment)
    assert f"'{key}'" in message
    assert all(name in message for name in valid)


def test_unknown_key_in_a_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text("[pdmm]\nc = 0.5\ncc = 1\n")
    assert "'pdmm.cc'" in load_error(path=path)


@pytest.mark.parametrize(
    "assignment, key",
    [
        ("rounds=many", "rounds"),
        ("rounds=2.5", "rounds"),
        ("local.lr=fast", "local.lr"),
        ("algorithms=pdmm", "algorithms"),
        ("data.num_clients=[10]", "data.num_clients"),
        ("data.name=5", "data.name"),
        ("attack.target=weights", "attack.target"),
        ("fedavg.weighting=median", "fedavg.weighting"),
        ("model.name=resnet", "model.name"),
        ("local=3", "local"),
    ],
)
def test_ill_typed_values_name_the_key(assignment: str, key: str) -> None:
    assert f"'{key}'" in load_error(assignment)


@pytest.mark.parametrize("assignment", ["rounds=true", "local.lr=true", 'rounds="5"'])
def test_booleans_and_strings_are_not_numbers(assignment: str) -> None:
    assert f"'{assignment.split('=')[0]}'" in load_error(assignment)


# ---------------------------------------------------------------------------------------------
# Impossible settings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["data.num_clients=5", "attack.num_byzantine=6"], "attack.num_byzantine"),
        (["pdmm.c=0"], "pdmm.c"),
        (["pdmm.c=-0.4"], "pdmm.c"),
        (["pdmm.theta=0"], "pdmm.theta"),
        (["pdmm.theta=-0.5"], "pdmm.theta"),
        (["pdmm.theta=1.5"], "pdmm.theta"),
        (["attack.fraction=1.5"], "attack.fraction"),
        (["attack.fraction=-0.1"], "attack.fraction"),
        (["attack.fraction=0.2", "attack.num_byzantine=2"], "attack.num_byzantine"),
        (["algorithms=[]"], "algorithms"),
        (["attacks=[]"], "attacks"),
        (['algorithms=["pdmm", "pdmm"]'], "algorithms"),
        (["rounds=0"], "rounds"),
        (["data.num_clients=0"], "data.num_clients"),
        (["local.lr=0"], "local.lr"),
    ],
)
def test_impossible_settings_are_config_errors_naming_the_key(
    overrides: list[str], named: str
) -> None:
    assert named in load_error(*overrides)


def test_both_byzantine_counts_set_names_both_keys() -> None:
    message = load_error("attack.fraction=0.2", "attack.num_byzantine=2")
    assert "attack.num_byzantine" in message and "attack.fraction" in message


@pytest.mark.parametrize("theta", [1.0, 0.5, 1e-3])
def test_theta_in_the_half_open_interval_is_accepted(theta: float) -> None:
    assert config.load(None, [f"pdmm.theta={theta}"]).pdmm.theta == theta


@pytest.mark.parametrize("overrides", [["attack.num_byzantine=10"], ["attack.fraction=1.0"]])
def test_every_client_byzantine_is_a_config_error(overrides: list[str]) -> None:
    assert "attack." in load_error(*overrides)


@pytest.mark.parametrize("assignment", ["pdmm.c=inf", "local.lr=inf", "data.alpha=inf"])
def test_infinite_hyperparameters_are_config_errors(assignment: str) -> None:
    assert assignment.split("=")[0] in load_error(assignment)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ([], 2),
        (["attack.num_byzantine=0"], 0),
        (["attack.num_byzantine=3"], 3),
        (["attack.fraction=0.3"], 3),
        (["attack.fraction=0.29"], 2),
        (["attack.fraction=0.7"], 7),
        (["data.num_clients=1"], 0),
        (["data.num_clients=20", "attack.fraction=0.35"], 7),
    ],
)
def test_number_of_byzantine_clients(overrides: list[str], expected: int) -> None:
    assert config.load(None, overrides).num_byzantine == expected


# ---------------------------------------------------------------------------------------------
# dump_toml
# ---------------------------------------------------------------------------------------------

ROUND_TRIP_OVERRIDES = [
    [],
    [
        "seed=123",
        "rounds=7",
        'algorithms=["fedavg"]',
        'attacks=["none", "gaussian", "ipm"]',
        'attack.target=["model", "update"]',
        "attack.fraction=0.25",
        "attack.mode=replace",
        "attack.sigma=1e-05",
        "attack.params.ipm.epsilon=0.5",
        "attack.params.gaussian.sigma=2.5",
        "data.partition=dirichlet",
        "data.alpha=0.1",
        'data.dir="C:\\\\data \\"sets\\"\\tx"',
        "model.name=cnn",
        "model.hidden=[]",
        "pdmm.theta=0.5",
        "fedavg.weighting=samples",
        "local.lr=0.30000000000000004",
    ],
]


@pytest.mark.parametrize("overrides", ROUND_TRIP_OVERRIDES, ids=["defaults", "everything"])
def test_dump_toml_round_trips_to_the_same_config(overrides: list[str]) -> None:
    cfg = config.load(None, overrides)
    text = config.dump_toml(config.to_dict(cfg))
    parsed = tomllib.loads(text)
    assert parsed == config.to_dict(cfg)
    assert config.validate(parsed) == cfg


def test_dumped_file_loads_back(tmp_path: Path) -> None:
    cfg = config.load(None, ["attack.num_byzantine=4", "data.dir=/some/where", "local.lr=0.07"])
    path = tmp_path / "config.toml"
    path.write_text(config.dump_toml(config.to_dict(cfg)))
    assert config.load(path) == cfg


def test_dump_toml_writes_special_floats() -> None:
    parsed = tomllib.loads(config.dump_toml({"a": math.inf, "b": -0.0, "t": {"c": 1e300}}))
    assert parsed["a"] == math.inf and parsed["t"]["c"] == 1e300
    assert math.copysign(1.0, parsed["b"]) == -1.0


def test_dump_toml_escapes_control_characters() -> None:
    data = {"data": {"dir": "line\nbreak\x01"}}
    assert tomllib.loads(config.dump_toml(data)) == data
