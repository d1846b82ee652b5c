"""Evaluation: the node-model subsample (`eval.node_samples`) and what it scores."""

from __future__ import annotations

import torch

from fedpdmm import config, engine
from fedpdmm.build import build_algorithm
from fedpdmm.evaluation import evaluate_round
from fedpdmm.local import evaluate
from fedpdmm.results import run_notes
from fedpdmm.setup import build_setup


def digits(*overrides: str):
    return config.load(None, ['attacks=["none"]', "rounds=2", "eval_every=1", *overrides])


def test_the_node_subsample_depends_on_the_seed_only() -> None:
    base = build_setup(digits("eval.node_samples=50"))
    other = build_setup(
        digits("eval.node_samples=50", "data.num_clients=7", "data.partition=dirichlet")
    )
    reseeded = build_setup(digits("eval.node_samples=50", "seed=1"))
    index = base.data.node_test_index
    assert index is not None and len(index) == 50 and len(set(index.tolist())) == 50
    assert bool((index[1:] > index[:-1]).all())
    assert torch.equal(index, other.data.node_test_index)
    assert not torch.equal(index, reseeded.data.node_test_index)
    probe = base.data.node_train_index
    assert probe is not None and len(probe) == 50
    assert set(probe.tolist()) <= set(base.data.train_eval_index.tolist())


def test_all_or_more_than_the_test_set_scores_the_whole_sets() -> None:
    for value in ('"all"', "100000"):
        data = build_setup(digits(f"eval.node_samples={value}")).data
        assert data.node_test_index is None and data.node_train_index is None
        inputs, labels = data.node_test_set()
        assert inputs is data.dataset.x_test and labels is data.dataset.y_test


def test_every_node_and_round_is_scored_on_the_same_subsample() -> None:
    setup = build_setup(digits("eval.node_samples=40", "topology.name=ring"))
    algorithm = build_algorithm("pdmm", setup.config, setup.network, setup.data.clients.sizes)
    state = algorithm.init(setup.x0)
    honest = torch.zeros(setup.config.data.num_clients, dtype=torch.bool)
    nodes = torch.randn(setup.config.data.num_clients, setup.model.dim) * 0.1
    state = state._replace(nodes=state.nodes._replace(x=nodes))
    metrics = evaluate_round(setup, algorithm, state, honest)
    inputs, labels = setup.data.node_test_set()
    accuracy, _ = evaluate(setup.model, nodes, inputs, labels)
    assert list(metrics["node_accuracy"].values()) == accuracy.tolist()
    assert metrics["test_accuracy"] == float(accuracy.mean())
    assert all(round(a * 40) == a * 40 for a in accuracy.tolist())  # fractions of 40 images


def test_the_global_model_is_scored_on_the_whole_test_set_and_notes_say_so() -> None:
    overrides = ["eval.node_samples=30", 'algorithms=["fedavg"]']
    setup, (result,) = engine.run(digits(*overrides))
    _, (whole,) = engine.run(digits('eval.node_samples="all"', 'algorithms=["fedavg"]'))
    for sampled_row, whole_row in zip(result.rows, whole.rows, strict=True):
        assert sampled_row["test_accuracy"] == whole_row["test_accuracy"]
        assert sampled_row["train_loss"] == whole_row["train_loss"]
        assert sampled_row["eval_time"] > 0
    assert any(
        r["honest_accuracy_mean"] != w["honest_accuracy_mean"]
        for r, w in zip(result.rows[1:], whole.rows[1:], strict=True)
    )
    note = next(line for line in run_notes(setup) if line.startswith("evaluation:"))
    assert "a fixed seeded subsample of 30 of the 359 test images" in note
