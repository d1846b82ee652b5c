"""Metrics of one evaluation: the global model (with a server) and every honest node's own model."""

from __future__ import annotations

import math
from typing import Any

import torch

from fedpdmm.algorithms.base import Algorithm, RoundState, finite_rows
from fedpdmm.local import evaluate
from fedpdmm.setup import Setup


def consensus_distance(models: torch.Tensor) -> float:
    """mean_i ||x_i - mean_j x_j|| over the rows of `models` `[m, d]` (NaN if any is non-finite)."""
    if not bool(torch.isfinite(models).all()):
        return float("nan")
    centered = models.double() - models.double().mean(dim=0)
    return float(centered.norm(dim=1).mean())


def is_broken(algorithm: Algorithm, state: RoundState, byzantine: torch.Tensor) -> bool:
    """True when the global model (or, without a server, every honest node) is non-finite."""
    global_model, node_models = algorithm.models(state)
    if global_model is not None:
        return not bool(torch.isfinite(global_model).all())
    return not bool(finite_rows(node_models[~byzantine]).any())


def evaluate_round(
    setup: Setup, algorithm: Algorithm, state: RoundState, byzantine: torch.Tensor
) -> dict[str, Any]:
    """Metrics of one evaluation. Without a server, the global columns hold the mean over the
    honest nodes whose models are finite (a run has diverged only when none is, `is_broken`), as
    do the honest mean/min/max columns; `nonfinite_clients` counts the others."""
    dataset, model = setup.data.dataset, setup.model
    global_model, node_models = algorithm.models(state)
    honest_models = node_models[~byzantine]
    honest_accuracy, honest_loss = evaluate(model, honest_models, dataset.x_test, dataset.y_test)
    finite = finite_rows(honest_models)
    train_inputs = dataset.x_train[setup.data.train_eval_index]
    train_labels = dataset.y_train[setup.data.train_eval_index]
    if global_model is not None:
        test_accuracy, test_loss = evaluate(
            model, global_model.unsqueeze(0), dataset.x_test, dataset.y_test
        )
        _, train_loss = evaluate(model, global_model.unsqueeze(0), train_inputs, train_labels)
    elif bool(finite.all()):
        test_accuracy, test_loss = honest_accuracy.mean(0, keepdim=True), honest_loss.mean(0, True)
        _, train_losses = evaluate(model, honest_models, train_inputs, train_labels)
        train_loss = train_losses.mean(0, keepdim=True)
    else:  # the honest nodes whose models are still finite (NaN when none is)
        test_accuracy = honest_accuracy[finite].mean(0, keepdim=True)
        test_loss = honest_loss[finite].mean(0, keepdim=True)
        _, train_losses = evaluate(model, honest_models[finite], train_inputs, train_labels)
        train_loss = train_losses.mean(0, keepdim=True)
    scored = honest_accuracy[finite]
    honest_nodes = (~byzantine).nonzero().flatten().tolist()
    return {
        "test_accuracy": float(test_accuracy[0]),
        "test_loss": float(test_loss[0]),
        "train_loss": float(train_loss[0]),
        "honest_accuracy_mean": float(scored.mean()) if len(scored) else math.nan,
        "honest_accuracy_min": float(scored.min()) if len(scored) else math.nan,
        "honest_accuracy_max": float(scored.max()) if len(scored) else math.nan,
        "consensus_distance": consensus_distance(honest_models),
        "nonfinite_clients": int((~finite_rows(honest_models)).sum()),
        "node_accuracy": dict(zip(honest_nodes, honest_accuracy.tolist(), strict=True)),
    }
