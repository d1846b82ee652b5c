"""Finished combinations shared by a sweep's runs: computed once, the same numbers as computing
them again, and keys that differ whenever anything that decides the numbers differs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from fedpdmm import config, engine, reuse, sweep
from fedpdmm.algorithms import ALGORITHMS
from fedpdmm.build import build_algorithm
from fedpdmm.results import TIMING_COLUMNS
from fedpdmm.setup import build_setup

SERVER = [
    "rounds=3",
    "eval_every=1",
    "data.num_clients=5",
    "model.hidden=[8]",
    "local.steps=2",
    'algorithms=["pdmm", "fedavg"]',
    'attacks=["none", "sign_flip"]',
    "attack.num_byzantine=1",
]
GRAPH = [*SERVER[:5], 'algorithms=["pdmm", "dsgd"]', *SERVER[6:], "topology.name=ring"]


def metric_rows(root: Path) -> list[dict[str, str]]:
    with (root / sweep.INDEX_FILE).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        for column in TIMING_COLUMNS:
            row.pop(column)
    return rows


@pytest.mark.parametrize(
    ("overrides", "unique"),
    [(SERVER, 5), (GRAPH, 5)],
    ids=["server", "graph"],
)
def test_a_shared_combination_is_computed_once_and_equals_computing_it_again(
    tmp_path: Path, overrides: list[str], unique: int
) -> None:
    # attack.state changes only PDMM under attack: the unattacked runs (2) and the other
    # algorithm under attack (1) are shared by the two states, PDMM under attack is not (2)
    plan = sweep.plan(config.load(None, overrides), {"attack.state": ["honest", "received"]})
    shared = sweep.run_sweep(plan, tmp_path / "shared", workers=1)
    alone = sweep.run_sweep(plan, tmp_path / "alone", workers=1, reuse=False)
    assert not shared.failed and not alone.failed
    stored = sorted((tmp_path / "shared" / sweep.REUSE_DIR).glob(f"*{reuse.SUFFIX}"))
    assert len(stored) == unique
    assert not (tmp_path / "alone" / sweep.REUSE_DIR).exists()
    assert metric_rows(tmp_path / "shared") == metric_rows(tmp_path / "alone")


def numbers(results: list[engine.CombinationResult]) -> list[list[dict]]:
    return [
        [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in result.rows]
        for result in results
    ]


def test_an_unreadable_stored_combination_is_computed_again(tmp_path: Path) -> None:
    base = config.load(None, SERVER)
    folder = tmp_path / "combinations"
    _, first = engine.run(base, reuse=folder)
    for path in folder.glob(f"*{reuse.SUFFIX}"):
        path.write_bytes(path.read_bytes()[:10])
    _, second = engine.run(base, reuse=folder)
    assert numbers(second) == numbers(first)
    assert all(
        a.rows[-1]["wall_time"] != b.rows[-1]["wall_time"]
        for a, b in zip(first, second, strict=True)
    )
    _, third = engine.run(base, reuse=folder)  # stored whole again by the second run
    assert [result.rows for result in third] == [result.rows for result in second]


def key(overrides: list[str], combination: tuple[str, str, str], setting: str = "server") -> str:
    return reuse.combination_key(config.load(None, overrides), combination, setting, None)


def test_keys_differ_exactly_where_the_numbers_can() -> None:
    attacked = ("pdmm", "sign_flip", "message")
    assert key(SERVER, attacked) != key([*SERVER, "attack.state=received"], attacked)
    for combination in (("fedavg", "sign_flip", "message"), ("pdmm", "none", "none")):
        assert key(SERVER, combination) == key([*SERVER, "attack.state=received"], combination)
    # the other keys of the run do not matter; every key that decides the numbers does
    assert key(SERVER, attacked) == key([*SERVER, 'algorithms=["pdmm"]'], attacked)
    assert key(SERVER, attacked) == key([*SERVER, 'attack.target=["message", "model"]'], attacked)
    for change in ("seed=7", "local.lr=0.02", "rounds=4", "attack.num_byzantine=2"):
        assert key(SERVER, attacked) != key([*SERVER, change], attacked), change
    assert key(SERVER, attacked) != key(SERVER, ("pdmm", "sign_flip", "model"))
    assert key(SERVER, attacked) != reuse.combination_key(
        config.load(None, SERVER), attacked, "server", "/elsewhere"
    )


@pytest.mark.parametrize("setting", ["server", "graph"])
def test_has_echo_says_whether_an_algorithm_keeps_an_echo(setting: str) -> None:
    overrides = SERVER[:5] + (["topology.name=ring"] if setting == "graph" else [])
    setup = build_setup(config.load(None, overrides))
    for name, entry in ALGORITHMS.items():
        implementation = entry.implementation(setting)
        if implementation is None:
            continue
        algorithm = build_algorithm(name, setup.config, setup.network, setup.data.clients.sizes)
        state = algorithm.init(setup.x0)
        echo = algorithm.echo(state, torch.tensor([0]))
        assert implementation.has_echo == (echo is not None), name
        assert reuse.state_matters(name, "sign_flip", setting) == implementation.has_echo
        assert not reuse.state_matters(name, "none", setting)


def test_a_claimed_combination_is_left_to_its_holder(tmp_path: Path) -> None:
    with reuse.claim(tmp_path, "k") as mine:
        assert mine
        with reuse.claim(tmp_path, "k") as other:
            assert not other
    with reuse.claim(tmp_path, "k", wait=True) as mine:
        assert mine


@pytest.mark.parametrize("pooled", [False, True], ids=["runs-claim", "pool"])
def test_runs_in_flight_together_compute_a_shared_combination_once(
    tmp_path: Path, pooled: bool
) -> None:
    # without the pool, runs in flight at once claim the combinations they share
    plan = sweep.plan(config.load(None, SERVER), {"attack.state": ["honest", "received"]})
    outcome = sweep.run_sweep(plan, tmp_path / "sweep", workers=2, pooled=pooled)
    assert not outcome.failed
    with (tmp_path / "sweep" / sweep.INDEX_FILE).open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    timings: dict[tuple, set[str]] = {}
    for row in rows:
        if row["attack"] == "none" or row["algorithm"] == "fedavg":
            point = (row["algorithm"], row["attack"], row["target"], row["round"])
            timings.setdefault(point, set()).add(row["wall_time"])
    assert timings and all(len(seen) == 1 for seen in timings.values()), timings


def test_a_combination_computed_by_other_code_is_not_reused(monkeypatch):
    """The key holds a hash of the package's sources: an edit without a version bump changes it."""
    before = key(SERVER, ("pdmm", "none", "none"))
    monkeypatch.setattr(reuse, "code_fingerprint", lambda: "edited")
    assert key(SERVER, ("pdmm", "none", "none")) != before
