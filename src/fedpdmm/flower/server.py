"""The server's side of a federation: the engine's round loop with messages that can go missing.

The loop is `fedpdmm.engine.run_combination` with the clients behind a `Transport` (Flower's Grid,
or `LoopbackTransport` in one process). What differs is only what a network adds:

- a reply that does not arrive within the round timeout (or comes back as an error) is *missing*:
  FedAvg averages the replies that arrived; PDMM drops that client's edge, so its server dual no
  longer enters x_s = mean_{active i} z_s[i] / c, and the client is asked to start afresh
  (`reset`) when it is next reached, with its edge re-opened at z_s[i] = c x_s (which leaves x_s
  unchanged): no stale dual biases the result. The round does not wait for dropped clients.
- a reply that is not a finite float vector of the model's size is *malformed*: it is not
  accepted (exactly as the engine treats a non-finite message) and counted.

Metric rows are the engine's (`dropped_messages` counts every message not accepted), plus the
cumulative `missing_replies`, `malformed_replies` and the round's `active_clients`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Protocol

import torch

from fedpdmm import engine
from fedpdmm.algorithms import PDMMStar
from fedpdmm.algorithms.common import finite_rows
from fedpdmm.flower.client import RoundReply, RoundRequest
from fedpdmm.flower.settings import RunSettings
from fedpdmm.seeding import generator


class Transport(Protocol):
    def exchange(
        self, requests: dict[int, RoundRequest], wait_for: set[int], timeout: float
    ) -> dict[int, RoundReply]:
        """Send each partition its request; return the replies that arrived, by partition.

        Waits until every partition in `wait_for` answered or `timeout` seconds passed.
        """
        ...

    def take_rejoined(self) -> set[int]:
        """Partitions served by a new node since the last call (their state must start afresh)."""
        ...


def server_setup(
    settings: RunSettings, byzantine: torch.Tensor, data_dir: str | None
) -> engine.Setup:
    """The engine's setup, with the Byzantine set the nodes reported (`[n]` bool)."""
    setup = engine.build_setup(settings.config, data_dir)
    if torch.equal(setup.byzantine, byzantine):
        return setup
    n = settings.config.data.num_clients
    honest = torch.cat([setup.parts[k] for k in range(n) if not byzantine[k]] or [setup.parts[0]])
    keep = torch.randperm(len(honest), generator=generator(settings.config.seed, "train-eval"))
    index = honest[keep[: engine.TRAIN_EVAL_SAMPLES]].sort().values
    return dataclasses.replace(setup, byzantine=byzantine.clone(), train_eval_index=index)


def check_message(message: Any, dim: int) -> str | None:
    """Why `message` is not a usable reply (None if it is a finite float tensor `[dim]`)."""
    if not isinstance(message, torch.Tensor):
        return f"not a tensor ({type(message).__name__})"
    if message.shape != (dim,):
        return f"shape {tuple(message.shape)}, expected ({dim},)"
    if not message.is_floating_point():
        return f"dtype {message.dtype}, expected a float"
    if not bool(torch.isfinite(message).all()):
        return "non-finite entries"
    return None


def update_active(
    algorithm: Any,
    server: Any,
    messages: torch.Tensor,
    accepted: torch.Tensor,
    active: torch.Tensor,
    **update_options: Any,
) -> Any:
    """`algorithm.update` over the active edges only (`[n]` masks).

    For PDMM an inactive edge's dual is left out of x_s (the update runs on the active rows as a
    smaller star); FedAvg already averages only the accepted rows.
    """
    if not isinstance(algorithm, PDMMStar) or bool(active.all()):
        return algorithm.update(server, messages, accepted, **update_options)
    if not bool(active.any()):
        return server
    star = dataclasses.replace(algorithm, num_clients=int(active.sum()))
    part = star.update(
        server._replace(z=server.z[active]), messages[active], accepted[active], **update_options
    )
    z = server.z.clone()
    z[active] = part.z
    return part._replace(z=z)


def reopen_edges(algorithm: Any, server: Any, partitions: list[int]) -> Any:
    """PDMM: re-initialise the server duals of `partitions` to z_s[i] = c x_s (x_s unchanged)."""
    if not isinstance(algorithm, PDMMStar) or not partitions:
        return server
    z = server.z.clone()
    z[partitions] = algorithm.c * server.x
    return server._replace(z=z)


def run_combination(
    setup: engine.Setup,
    transport: Transport,
    settings: RunSettings,
    index: int,
    combination: tuple[str, str, str],
    progress: engine.ProgressCallback | None = None,
) -> engine.CombinationResult:
    """One algorithm x attack x target over the transport; the engine's metric rows."""
    algorithm_name, attack_name, target = combination
    config = setup.config
    n, dim = config.data.num_clients, setup.x0.numel()
    result = engine.CombinationResult(algorithm_name, attack_name, target)
    algorithm = engine.build_algorithm(algorithm_name, setup)
    byzantine = setup.byzantine if attack_name != "none" else torch.zeros_like(setup.byzantine)
    server, initial_clients = algorithm.init(setup.x0)
    models = algorithm.client_models(initial_clients).clone()
    active = torch.ones(n, dtype=torch.bool)
    fresh = torch.ones(n, dtype=torch.bool)  # the client's next request starts its state afresh
    counts = {"samples": 0, "dropped": 0, "missing": 0, "malformed": 0}
    began = time.perf_counter()

    def record(round_index: int) -> bool:
        view = initial_clients._replace(x=models)
        row = engine.evaluate_round(setup, algorithm, (server, view), byzantine)
        row.update(
            algorithm=algorithm_name,
            attack=attack_name,
            target=target if attack_name != "none" else "none",
            round=round_index,
            num_byzantine=int(byzantine.sum()),
            samples=counts["samples"],
            dropped_messages=counts["dropped"],
            missing_replies=counts["missing"],
            malformed_replies=counts["malformed"],
            active_clients=int(active.sum()),
            wall_time=time.perf_counter() - began,
        )
        result.rows.append(row)
        return math.isfinite(row["test_loss"])

    record(0)
    for round_index in range(1, config.rounds + 1):
        for partition in transport.take_rejoined():
            active[partition], fresh[partition] = False, True
        server = reopen_edges(algorithm, server, (fresh & ~active).nonzero().flatten().tolist())
        evaluate_now = round_index % config.eval_every == 0 or round_index == config.rounds
        downlink = algorithm.downlink(server)
        requests = {
            k: RoundRequest(
                index,
                algorithm_name,
                attack_name,
                target,
                round_index,
                downlink[k].clone(),
                bool(fresh[k]),
                evaluate_now,
            )
            for k in range(n)
        }
        replies = transport.exchange(
            requests, set(active.nonzero().flatten().tolist()), settings.round_timeout
        )
        messages = torch.zeros(n, dim, dtype=setup.x0.dtype)
        accepted = torch.zeros(n, dtype=torch.bool)
        for k in range(n):
            reply = replies.get(k)
            if reply is None:
                counts["missing"] += 1
                active[k], fresh[k] = False, True
                continue
            active[k], fresh[k] = True, False
            counts["samples"] += config.local.steps * config.local.batch_size
            if check_message(reply.message, dim) is None:
                messages[k], accepted[k] = reply.message.to(messages.dtype), True
            else:
                counts["malformed"] += 1
            if reply.model is not None and check_message(reply.model, dim) is None:
                models[k] = reply.model
        counts["dropped"] += int((~accepted).sum())
        accepted &= finite_rows(messages)
        server = update_active(
            algorithm,
            server,
            messages,
            accepted,
            active,
            reference=engine.server_reference(setup, algorithm, server, round_index),
            generator=generator(config.seed, "aggregate", round_index),
        )
        diverged = not bool(torch.isfinite(algorithm.global_model(server)).all())
        if evaluate_now or diverged:
            finite = record(round_index)
            if diverged or not finite:
                result.status = f"diverged at round {round_index}"
                break
        if progress is not None:
            progress(f"{algorithm_name} / {attack_name}", round_index, config.rounds)
    return result


def run_federation(
    setup: engine.Setup,
    transport: Transport,
    settings: RunSettings,
    progress: engine.ProgressCallback | None = None,
) -> list[engine.CombinationResult]:
    """Every combination of the config, in the engine's order, over one transport."""
    return [
        run_combination(setup, transport, settings, index, combination, progress)
        for index, combination in enumerate(engine.combinations(setup.config))
    ]
