"""CNN training throughput: the `batched` and `loop` paths of `fedpdmm.local.train` beside a bare
single-model PyTorch loop on the same samples.

    python benchmarks/cnn_training.py --data-dir /work/shared/datasets [--clients 10 25]

For each network (LeNet-5, fedpdmm's default `cnn`; and Karimireddy, He and Jaggi's MNIST network:
32 and 64 3x3 channels without a ReLU after the second, channel dropout 0.25, a 128-unit layer,
dropout 0.5) and client count, one round of K local steps of batch B per client is timed for:
`train(mode="batched")`, `train(mode="loop")` and a bare loop that trains one `nn.Module` with
`torch.optim.SGD` on all clients' samples of each step as one batch (the same forward and
backward work, one model). The runs are interleaved, `--repeats` times, at one torch thread; the
table shows medians of samples per second and each path's ratio to the bare loop measured in the
same repetitions.
"""

from __future__ import annotations

import argparse
import statistics

import torch
from throughput import bare_round, timed  # the bare loop of benchmarks/throughput.py

from fedpdmm import local
from fedpdmm.data import load_dataset, partition
from fedpdmm.models import ConvSpec, FlatModel, build_module
from fedpdmm.seeding import generator

NETWORKS = {
    "lenet": ((120, 84), ConvSpec()),
    "karimireddy": (  # as `configs/mnist_bucketing.toml` sets it
        (128,),
        ConvSpec((32, 64), 3, 0, "last", (0.25, 0.5), last_relu=False, channel_dropout=True),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--paths", nargs="+", default=["batched", "loop"])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    dataset = load_dataset("mnist", data_dir=args.data_dir)
    print("| network | clients | path | samples/s | ratio to bare loop |")
    print("|---|---|---|---|---|")
    for name in args.networks:
        hidden, conv = NETWORKS[name]
        shape, classes = dataset.input_shape, dataset.num_classes
        model = FlatModel.build("cnn", shape, classes, hidden, conv)
        for clients in args.clients:
            parts = partition(dataset.y_train, clients, "iid", generator=generator(0, "split"))
            data = local.ClientData.from_parts(dataset.x_train, dataset.y_train, parts)
            start = model.init(generator(0, "init")).expand(clients, -1).contiguous()
            index = torch.arange(clients)
            samples = clients * args.steps * args.batch_size
            paths = [p for p in args.paths if p == "batched" or not conv.has_dropout]
            seconds: dict[str, list[float]] = {path: [] for path in [*paths, "bare"]}
            for repeat in range(-1, args.repeats):  # repeat -1 warms up, untimed
                module = build_module("cnn", shape, classes, hidden, conv).to_empty(device="cpu")
                torch.nn.utils.vector_to_parameters(start[0].clone(), module.parameters())
                positions = local.batch_positions(
                    data, index, max(repeat, 0), args.steps, args.batch_size, 0
                )
                module.train()  # the bare loop drops out as nn.Dropout does
                took = {"bare": timed(bare_round, module, data, positions, 0.05)}
                for path in paths:
                    took[path] = timed(
                        local.train,
                        model,
                        start,
                        data,
                        index,
                        repeat,
                        steps=args.steps,
                        batch_size=args.batch_size,
                        lr=0.05,
                        seed=0,
                        mode=path,
                    )
                if repeat >= 0:
                    for path, value in took.items():
                        seconds[path].append(value)
            for path in [*paths, "bare"]:
                median = statistics.median(seconds[path])
                ratios = [b / s for b, s in zip(seconds["bare"], seconds[path], strict=True)]
                print(
                    f"| {name} | {clients} | {path} | {samples / median:,.0f} | "
                    f"{statistics.median(ratios):.2f} |"
                )


if __name__ == "__main__":
    main()
