"""Round requests and replies as Flower records (the only module here that packs tensors).

request:  "fedpdmm-downlink" ArrayRecord {y: [d]}       the client's row of the downlink
          "fedpdmm-round"    ConfigRecord                combination, names, round, flags, steps
reply:    "fedpdmm-reply"    ArrayRecord {message: [d], model: [d] (evaluation rounds)}
          "fedpdmm-timing"   MetricRecord                seconds the node spent
query:    "fedpdmm-node"     ConfigRecord {partition-id, byzantine, num-samples}
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedpdmm.flower.client import RoundReply, RoundRequest

QUERY_TYPE = "query.info"
TRAIN_TYPE = "train"


def pack_request(request: RoundRequest) -> RecordDict:
    return RecordDict(
        {
            "fedpdmm-downlink": ArrayRecord(torch_state_dict={"y": request.downlink.contiguous()}),
            "fedpdmm-round": ConfigRecord(
                {
                    "combination": request.combination,
                    "algorithm": request.algorithm,
                    "attack": request.attack,
                    "target": request.target,
                    "round": request.round,
                    "reset": request.reset,
                    "send-model": request.send_model,
                    "steps": -1 if request.steps is None else request.steps,
                }
            ),
        }
    )


def unpack_request(content: RecordDict) -> RoundRequest:
    fields = content["fedpdmm-round"]
    downlink = content["fedpdmm-downlink"].to_torch_state_dict()["y"]
    return RoundRequest(
        combination=int(fields["combination"]),
        algorithm=str(fields["algorithm"]),
        attack=str(fields["attack"]),
        target=str(fields["target"]),
        round=int(fields["round"]),
        downlink=downlink,
        reset=bool(fields["reset"]),
        send_model=bool(fields["send-model"]),
        steps=None if int(fields.get("steps", -1)) < 0 else int(fields["steps"]),
    )


def pack_reply(reply: RoundReply, timing: dict[str, float]) -> RecordDict:
    arrays = {"message": reply.message.contiguous()}
    if reply.model is not None:
        arrays["model"] = reply.model.contiguous()
    return RecordDict(
        {
            "fedpdmm-reply": ArrayRecord(torch_state_dict=arrays),
            "fedpdmm-timing": MetricRecord({k: float(v) for k, v in timing.items()}),
        }
    )


def unpack_reply(content: RecordDict) -> tuple[RoundReply, dict[str, float]]:
    """The reply, with anything missing or unreadable left as None (the server rejects it)."""
    record = content.get("fedpdmm-reply")
    arrays: dict[str, Any] = {}
    if isinstance(record, ArrayRecord):
        try:
            arrays = dict(record.to_torch_state_dict())
        except Exception:  # an undecodable array is a malformed reply, not a crash
            arrays = {}
    timing = content.get("fedpdmm-timing")
    seconds = dict(timing) if isinstance(timing, MetricRecord) else {}
    reply = RoundReply(arrays.get("message"), arrays.get("model"), seconds.get("handler", 0.0))
    return reply, seconds


def state_record(state: dict[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord(torch_state_dict={k: v.contiguous() for k, v in state.items()})


def state_tensors(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return dict(record.to_torch_state_dict())
