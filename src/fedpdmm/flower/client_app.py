"""The ClientApp: a SuperNode's handlers for the discovery query and the training rounds.

Flower starts a fresh process per message, so everything a node keeps lives in its `Context.state`
(SuperNode memory, scoped to the run, lost when the SuperNode restarts): its own partition
(`fedpdmm-data`, loaded once, at discovery) and its algorithm state (`fedpdmm-state`, per
algorithm x attack x target combination).
"""

from __future__ import annotations

import os
import time

_IMPORT_BEGAN = time.perf_counter()

import torch  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402

from fedpdmm.flower import records  # noqa: E402
from fedpdmm.flower.client import LocalData, client_round, load_local_data  # noqa: E402
from fedpdmm.flower.settings import NodeRole, read_node_config, read_run_config  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _IMPORT_BEGAN
_IMPORTED_IN = os.getpid()  # a task forked from a warm SuperExec inherits the imports


def import_seconds() -> float:
    """Seconds this process spent importing torch and fedpdmm before its task: 0 in a process
    forked after the imports (`fedpdmm.flower.warm`)."""
    return IMPORT_SECONDS if os.getpid() == _IMPORTED_IN else 0.0


app = ClientApp()


def _role(context: Context):
    settings = read_run_config(context.run_config)
    return settings, read_node_config(context.node_config, settings)


def _local_data(context: Context, settings, role: NodeRole) -> LocalData:
    """This node's partition: from the run's cache, else loaded (and cached)."""
    cached = context.state.get("fedpdmm-data")
    meta = context.state.get("fedpdmm-data-meta")
    if isinstance(cached, ArrayRecord) and isinstance(meta, ConfigRecord):
        arrays = cached.to_torch_state_dict()
        return LocalData(
            arrays["features"],
            arrays["labels"],
            tuple(int(v) for v in meta["input-shape"]),
            int(meta["num-classes"]),
        )
    local = load_local_data(settings.config, role)
    context.state["fedpdmm-data"] = ArrayRecord(
        torch_state_dict={"features": local.features, "labels": local.labels}
    )
    context.state["fedpdmm-data-meta"] = ConfigRecord(
        {"input-shape": list(local.input_shape), "num-classes": local.num_classes}
    )
    return local


@app.query("info")
def info(message: Message, context: Context) -> Message:
    """Discovery: report the partition and role, and load this node's data once."""
    torch.set_num_threads(1)
    settings, role = _role(context)
    local = _local_data(context, settings, role)
    content = RecordDict(
        {
            "fedpdmm-node": ConfigRecord(
                {
                    "partition-id": role.partition,
                    "byzantine": role.byzantine,
                    "num-samples": len(local.labels),
                }
            )
        }
    )
    return Message(content, reply_to=message)


@app.train()
def train(message: Message, context: Context) -> Message:
    """One round: the engine's client steps on this node's row (see `fedpdmm.flower.client`)."""
    began = time.perf_counter()
    torch.set_num_threads(1)
    settings, role = _role(context)
    local = _local_data(context, settings, role)
    request = records.unpack_request(message.content)
    meta = context.state.get("fedpdmm-state-meta")
    stored = context.state.get("fedpdmm-state")
    state = None
    if (
        isinstance(meta, ConfigRecord)
        and isinstance(stored, ArrayRecord)
        and int(meta["combination"]) == request.combination
    ):
        state = records.state_tensors(stored)
    new_state, reply = client_round(settings.config, role, local, request, state)
    context.state["fedpdmm-state"] = records.state_record(new_state)
    context.state["fedpdmm-state-meta"] = ConfigRecord({"combination": request.combination})
    timing = {
        "handler": time.perf_counter() - began,
        "compute": reply.seconds,
        "import": import_seconds(),
    }
    return Message(records.pack_reply(reply, timing), reply_to=message)
