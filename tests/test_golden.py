"""Pinned metrics of a few runs (server and graph, with and without attack, robust rules, every
target), so a change of the round's arithmetic cannot drift silently. Every case but
`graph_node_sample` evaluates as every run did before the evaluation samples were bounded
(`WHOLE_SETS`).

The file `golden/metrics.json` was recorded with torch 2.13 on one thread. Counts must match
exactly; float metrics to 1e-6 (relative or absolute), far below any change of semantics but
loose enough for a different CPU's vector width. A deliberate change of the numbers re-records
the file with `python tests/test_golden.py --record` and says why in its commit.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from fedpdmm import config, engine
from fedpdmm.results import TIMING_COLUMNS

GOLDEN = Path(__file__).parent / "golden" / "metrics.json"
TOLERANCE = 1e-6

WHOLE_SETS = ['eval.node_samples="all"', "eval.train_samples=10000"]
"""The evaluation of every run before `eval.node_samples` and `eval.train_samples` existed."""

CASES: dict[str, list[str]] = {
    "server": [
        *WHOLE_SETS,
        "rounds=4",
        "eval_every=2",
        'algorithms=["pdmm", "fedavg", "fedavg+median", "pdmm+trimmed_mean"]',
        'attacks=["none", "sign_flip", "gaussian"]',
        'attack.target=["message", "model", "update"]',
        "local.steps=3",
    ],
    "server_theta": [
        *WHOLE_SETS,
        "rounds=3",
        "eval_every=1",
        "pdmm.theta=0.5",
        'algorithms=["pdmm", "fedavg+centered_clipping", "fedprox", "scaffold"]',
        'attacks=["none", "alie", "label_flip"]',
        "data.partition=dirichlet",
        "local.steps=2",
    ],
    "graph": [
        *WHOLE_SETS,
        "rounds=4",
        "eval_every=2",
        "topology.name=ring",
        'algorithms=["pdmm", "dsgd", "dsgd+trimmed_mean", "pdmm+median"]',
        'attacks=["none", "sign_flip", "gaussian"]',
        'attack.target=["message", "model", "update"]',
        "local.steps=3",
        "attack.num_byzantine=1",
    ],
    "graph_rgg": [
        *WHOLE_SETS,
        "rounds=3",
        "eval_every=3",
        "topology.name=random_geometric",
        "data.num_clients=12",
        'attacks=["none", "ipm", "inf"]',
        "pdmm.theta=0.5",
        "local.steps=2",
        "attack.params.ipm.epsilon=0.5",
    ],
    "graph_node_sample": [
        "rounds=2",
        "eval_every=1",
        "topology.name=ring",
        'attacks=["none", "sign_flip"]',
        "local.steps=2",
        "eval.node_samples=100",
    ],
}


def measure(overrides: list[str]) -> list[dict]:
    """Every combination's status and metric rows (without wall time) for one case."""
    _, results = engine.run(config.load(None, overrides))
    return [
        {
            "combination": [result.algorithm, result.attack, result.target],
            "status": result.status,
            "rows": [
                {k: v for k, v in row.items() if k not in {*TIMING_COLUMNS, "node_accuracy"}}
                for row in result.rows
            ],
        }
        for result in results
    ]


def same(want: object, got: object) -> bool:
    if isinstance(want, float):
        if math.isnan(want):
            return isinstance(got, float) and math.isnan(got)
        return isinstance(got, float) and abs(got - want) <= TOLERANCE * max(1.0, abs(want))
    return want == got


@pytest.mark.parametrize("case", sorted(CASES))
def test_metrics_equal_the_pinned_runs(case: str) -> None:
    pinned = json.loads(GOLDEN.read_text())[case]
    measured = measure(CASES[case])
    assert [m["combination"] for m in measured] == [p["combination"] for p in pinned]
    for want, got in zip(pinned, measured, strict=True):
        assert got["status"] == want["status"], want["combination"]
        assert len(got["rows"]) == len(want["rows"]), want["combination"]
        for want_row, got_row in zip(want["rows"], got["rows"], strict=True):
            assert set(got_row) == set(want_row)
            for key, value in want_row.items():
                assert same(value, got_row[key]), (want["combination"], want_row["round"], key)


def test_every_case_is_pinned() -> None:
    assert sorted(json.loads(GOLDEN.read_text())) == sorted(CASES)


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    torch.set_num_threads(1)
    GOLDEN.write_text(json.dumps({case: measure(CASES[case]) for case in CASES}, indent=1) + "\n")
    print(f"recorded {GOLDEN}")
