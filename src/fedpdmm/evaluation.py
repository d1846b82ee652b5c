"""Metrics of one evaluation: the global model (with a server) and every honest node's own model."""

from __future__ import annotations

import math
from typing import Any

import torch

from fedpdmm.algorithms.base import Algorithm, RoundState, finite_rows
from fedpdmm.local import evaluate
from fedpdmm.setup import Setup


def consensus_distance(models: torch.Tensor, rows_per_chunk: int = 16) -> float:
    """mean_i ||x_i - mean_j x_j|| over the rows of `models` `[m, d]` (NaN if any is non-finite),
    in float64, `rows_per_chunk` rows at a time (no `[m, d]` float64 copy)."""
    if len(models) == 0 or not bool(finite_rows(models).all()):
        return float("nan")
    mean = torch.zeros(models.shape[1], dtype=torch.float64, device=models.device)
    for first in range(0, len(models), rows_per_chunk):
        mean += models[first : first + rows_per_chunk].sum(dim=0, dtype=torch.float64)
    mean /= len(models)
    total = 0.0
    for first in range(0, len(models), rows_per_chunk):
        rows = models[first : first + rows_per_chunk].double()
        total += float(rows.sub_(mean).norm(dim=1).sum())
    return total / len(models)


def is_broken(algorithm: Algorithm, state: RoundState, byzantine: torch.Tensor) -> bool:
    """True when the global model (or, without a server, every honest node) is non-finite."""
    global_model, node_models = algorithm.models(state)
    if global_model is not None:
        return not bool(torch.isfinite(global_model).all())
    return not bool(finite_rows(node_models[~byzantine]).any())


def evaluate_round(
    setup: Setup, algorithm: Algorithm, state: RoundState, byzantine: torch.Tensor
) -> dict[str, Any]:
    """Metrics of one evaluation. The global model (with a server) is scored on the whole test
    set and training-loss probe; every honest node's model on the node test set and probe
    (`eval.node_samples`, `FederatedData.node_test_set`). Without a server, the global columns
    hold the mean over the honest nodes whose models are finite (a run has diverged only when
    none is, `is_broken`), as do the honest mean/min/max columns; `nonfinite_clients` counts
    the others. On a graph `averaged_model_accuracy` scores the parameter average of those
    models on the whole test set (the metric of He, Karimireddy and Jaggi's decentralized
    experiments), a model no node holds."""
    data, model = setup.data, setup.model
    global_model, node_models = algorithm.models(state)
    honest_models = node_models[~byzantine] if bool(byzantine.any()) else node_models
    node_inputs, node_labels = data.node_test_set()
    honest_accuracy, honest_loss = evaluate(model, honest_models, node_inputs, node_labels)
    finite = finite_rows(honest_models)
    if global_model is not None:
        dataset = data.dataset
        test_accuracy, test_loss = evaluate(
            model, global_model.unsqueeze(0), dataset.x_test, dataset.y_test
        )
        _, train_loss = evaluate(model, global_model.unsqueeze(0), *data.train_probe(False))
    else:  # the honest nodes whose models are still finite (NaN when none is)
        scored_models, scored_accuracy, scored_loss = honest_models, honest_accuracy, honest_loss
        if not bool(finite.all()):
            scored_models = honest_models[finite]
            scored_accuracy, scored_loss = honest_accuracy[finite], honest_loss[finite]
        test_accuracy = scored_accuracy.mean(0, keepdim=True)
        test_loss = scored_loss.mean(0, keepdim=True)
        _, train_losses = evaluate(model, scored_models, *data.train_probe(True))
        train_loss = train_losses.mean(0, keepdim=True)
    scored = honest_accuracy[finite]
    honest_nodes = (~byzantine).nonzero().flatten().tolist()
    extra = {}
    if global_model is None:  # the peers' metric on a graph: the honest nodes' average model
        average = honest_models[finite].mean(0, keepdim=True) if bool(finite.any()) else None
        if average is not None:
            dataset = data.dataset
            accuracy, _ = evaluate(model, average, dataset.x_test, dataset.y_test)
            extra["averaged_model_accuracy"] = float(accuracy[0])
        else:
            extra["averaged_model_accuracy"] = math.nan
    return {
        **extra,
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
