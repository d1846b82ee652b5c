"""The ServerApp: discovery, then the engine's rounds with per-client messages over Flower's Grid.

Discovery maps SuperNodes to partitions (node ids are random per SuperNode start, and the server
cannot read node configs): each node answers a `query.info` with its partition and role. Each
round every partition gets its own `train` message; the server waits for the active ones up to
`round-timeout` (see `fedpdmm.flower.server` for what a missing or malformed reply does). A node
id that appears mid-run is queried; when it serves a partition it takes that partition over and
starts afresh (a SuperNode that restarted, with a new id, rejoins this way).
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.serverapp import Grid, ServerApp

from fedpdmm import results
from fedpdmm.errors import ConfigError
from fedpdmm.flower import records
from fedpdmm.flower.client import RoundReply, RoundRequest
from fedpdmm.flower.server import run_federation, server_setup
from fedpdmm.flower.settings import RunSettings, check_deployable, read_run_config

POLL_SECONDS = 0.2
ROUND_LOG = "flower_rounds.csv"

app = ServerApp()


def _retrying(call, *args, tries: int = 5):
    """`call(*args)`, retried on the SuperLink's transient errors (an HTTP 5xx under load)."""
    for attempt in range(tries):
        try:
            return call(*args)
        except Exception as error:
            status = getattr(getattr(error, "response", None), "status_code", 0)
            if status < 500 or attempt == tries - 1:
                raise
            print(f"fedpdmm: SuperLink error {status}, retrying", flush=True)
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


class GridTransport:
    """Partitions <-> SuperNodes over a Flower `Grid`, with per-round timing for the benchmark."""

    def __init__(self, grid: Grid, settings: RunSettings) -> None:
        self.grid = grid
        self.settings = settings
        self.node_of: dict[int, int] = {}  # partition -> node id
        self.byzantine: dict[int, bool] = {}
        self.queried: set[int] = set()  # node ids asked for their role
        self.pending_queries: dict[str, int] = {}  # message id -> node id
        self.rejoined: set[int] = set()
        self.log: list[dict[str, Any]] = []
        self._last_exchange_end: float | None = None

    def _query_new_nodes(self) -> None:
        new = [node for node in _retrying(self.grid.get_node_ids) if node not in self.queried]
        if not new:
            return
        messages = [
            Message(
                RecordDict({"q": ConfigRecord({})}),
                dst_node_id=node,
                message_type=records.QUERY_TYPE,
                group_id="discovery",
            )
            for node in new
        ]
        ids = list(self.grid.push_messages(messages))
        self.queried.update(new)
        self.pending_queries.update(zip(ids, new, strict=True))

    def _pull_queries(self, strict: bool) -> None:
        if not self.pending_queries:
            return
        for reply in _retrying(self.grid.pull_messages, list(self.pending_queries)):
            node = self.pending_queries.pop(reply.metadata.reply_to_message_id, None)
            if node is None:
                continue
            if reply.has_error():
                reason = reply.error.reason
                if strict and "fedpdmm.errors" in reason:  # the node's config is wrong
                    raise ConfigError(f"SuperNode {node} failed discovery: {reason}")
                print(f"fedpdmm: SuperNode {node} failed discovery, asking again: {reason}")
                self.queried.discard(node)  # a transport error: query it again
                continue
            fields = reply.content["fedpdmm-node"]
            partition = int(fields["partition-id"])
            if self.node_of.get(partition) not in (None, node):
                self.rejoined.add(partition)
                print(f"fedpdmm: partition {partition} now served by SuperNode {node}")
            self.node_of[partition] = node
            self.byzantine.setdefault(partition, bool(fields["byzantine"]))

    def discover(self) -> torch.Tensor:
        """Wait until every partition has a node, or `discovery_timeout` seconds; return the
        reported Byzantine mask `[n]`.

        Partitions still without a node then are left out: they get no message and count as
        missing replies every round, like a node that dropped out, until a node serving them
        connects (`exchange` asks every new node). No node at all is an error."""
        n = self.settings.config.data.num_clients
        deadline = time.monotonic() + self.settings.discovery_timeout
        while len(self.node_of) < n:
            if time.monotonic() > deadline:
                missing = sorted(set(range(n)) - set(self.node_of))
                if not self.node_of:
                    raise ConfigError(
                        f"after {self.settings.discovery_timeout:g} s no SuperNode serves any "
                        f"partition of data.num_clients={n}; start one per partition with "
                        "--node-config 'partition-id=K' or raise discovery-timeout"
                    )
                print(
                    f"fedpdmm: after {self.settings.discovery_timeout:g} s no SuperNode serves "
                    f"partition(s) {missing}; going on without them (counted as missing)"
                )
                break
            self._query_new_nodes()
            self._pull_queries(strict=True)
            time.sleep(POLL_SECONDS)
        self.rejoined.clear()
        return torch.tensor([self.byzantine.get(k, False) for k in range(n)])

    def exchange(
        self, requests: dict[int, RoundRequest], wait_for: set[int], timeout: float
    ) -> dict[int, RoundReply]:
        began = time.perf_counter()
        server_seconds = began - (self._last_exchange_end or began)
        self._query_new_nodes()
        messages, partitions = [], []
        for partition, request in requests.items():
            node = self.node_of.get(partition)
            if node is None:
                continue
            messages.append(
                Message(
                    records.pack_request(request),
                    dst_node_id=node,
                    message_type=records.TRAIN_TYPE,
                    group_id=str(request.round),
                )
            )
            partitions.append(partition)
        pending = dict(zip(self.grid.push_messages(messages), partitions, strict=True))
        waiting = set(wait_for) & set(partitions) or set(partitions)
        replies: dict[int, RoundReply] = {}
        timings: list[dict[str, float]] = []
        deadline = time.monotonic() + timeout
        while pending and waiting and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            for reply in _retrying(self.grid.pull_messages, list(pending)):
                partition = pending.pop(reply.metadata.reply_to_message_id, None)
                if partition is None:
                    continue
                waiting.discard(partition)
                if reply.has_error():
                    print(f"fedpdmm: partition {partition}: {reply.error.reason}")
                    continue
                replies[partition], timing = records.unpack_reply(reply.content)
                timings.append(timing)
            self._pull_queries(strict=False)
        request = next(iter(requests.values()))
        self.log.append(
            {
                "combination": request.combination,
                "round": request.round,
                "replies": len(replies),
                "server_seconds_before": server_seconds,
                "exchange_seconds": time.perf_counter() - began,
                "client_handler_max": max((t.get("handler", 0.0) for t in timings), default=0.0),
                "client_compute_max": max((t.get("compute", 0.0) for t in timings), default=0.0),
                "client_import_max": max((t.get("import", 0.0) for t in timings), default=0.0),
            }
        )
        self._last_exchange_end = time.perf_counter()
        return replies

    def take_rejoined(self) -> set[int]:
        rejoined, self.rejoined = self.rejoined, set()
        return rejoined


def write_round_log(path: Path, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Discover the nodes, run every combination of the config, write the run directory."""
    torch.set_num_threads(1)
    settings = read_run_config(context.run_config)
    check_deployable(settings.config)
    if settings.out_dir is None:
        raise ConfigError("run config key 'out-dir' is missing: give an absolute path")
    results.check_output_dir(settings.out_dir)
    transport = GridTransport(grid, settings)
    byzantine = transport.discover()
    print(
        f"fedpdmm: {len(transport.node_of)} SuperNodes, Byzantine partitions "
        f"{byzantine.nonzero().flatten().tolist()}",
        flush=True,
    )
    setup = server_setup(settings, byzantine, settings.data_dir)

    def progress(label: str, round_index: int, rounds: int) -> None:
        print(f"fedpdmm: {label} round {round_index}/{rounds}", flush=True)

    outcomes = run_federation(setup, transport, settings, progress)
    results.write_run(settings.out_dir, setup, outcomes)
    write_round_log(settings.out_dir / ROUND_LOG, transport.log)
    print(f"fedpdmm: results in {settings.out_dir}", flush=True)
