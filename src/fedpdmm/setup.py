"""What every combination of one config shares: the federated data, the network, the model.

Built once per config (`build_setup`), so combinations differ only in the algorithm and the
attack: the same split, Byzantine set, initial model and batches.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from fedpdmm import devices, resources, topology
from fedpdmm.build import build_algorithm, check_names
from fedpdmm.config import Config
from fedpdmm.data import Dataset, label_histogram, load_dataset, partition, standardized
from fedpdmm.local import ClientData
from fedpdmm.models import FlatModel
from fedpdmm.network import Network, build_network
from fedpdmm.seeding import generator


@dataclass(frozen=True)
class FederatedData:
    """The dataset, each client's part of it, and the server's clean root dataset (FLTrust)."""

    dataset: Dataset
    parts: list[torch.Tensor]
    clients: ClientData
    histogram: torch.Tensor  # [n, classes]
    train_eval_index: torch.Tensor  # dataset indices used for the honest training loss
    root: ClientData
    node_test_index: torch.Tensor | None = None  # test indices scoring node models (None: all)
    node_train_index: torch.Tensor | None = None  # probe indices for node models (None: all)

    def node_test_set(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The test inputs and labels every honest node's model is scored on."""
        if self.node_test_index is None:
            return self.dataset.x_test, self.dataset.y_test
        index = self.node_test_index
        return self.dataset.x_test[index], self.dataset.y_test[index]

    def train_probe(self, nodes: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The honest training-loss probe: of the global model, or (`nodes`) of node models."""
        index = self.train_eval_index
        if nodes and self.node_train_index is not None:
            index = self.node_train_index
        return self.dataset.x_train[index], self.dataset.y_train[index]


@dataclass(frozen=True)
class Setup:
    config: Config
    data: FederatedData
    network: Network
    model: FlatModel
    x0: torch.Tensor  # [d] the initial model of every node


def sample_count(value: int | str) -> int | None:
    """An `eval.*_samples` value as a number, None for `"all"`."""
    return None if value == "all" else int(value)


def honest_train_sample(
    config: Config, parts: list[torch.Tensor], byzantine: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Seeded indices of the honest clients' training samples: `eval.train_samples` of them for
    the global model, and the first `eval.node_samples` of the same draw for node models (None
    when that is all of the first)."""
    n = config.data.num_clients
    honest = torch.cat([parts[k] for k in range(n) if not byzantine[k]] or [parts[0]])
    keep = torch.randperm(len(honest), generator=generator(config.seed, "train-eval"))
    probe = honest[keep[: sample_count(config.eval.train_samples)]].sort().values
    count = sample_count(config.eval.node_samples)
    if count is None or count >= len(probe):
        return probe, None
    return probe, honest[keep[:count]].sort().values


def node_test_sample(config: Config, num_test: int) -> torch.Tensor | None:
    """`eval.node_samples` seeded test indices (sorted), None when that is the whole test set.
    They depend on the seed and the test set's size only."""
    count = sample_count(config.eval.node_samples)
    if count is None or count >= num_test:
        return None
    order = torch.randperm(num_test, generator=generator(config.seed, "eval-nodes"))
    return order[:count].sort().values


def capped(parts: list[torch.Tensor], limit: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Each part with at most `limit` of its indices, a random subset drawn from `gen` client by
    client (sorted, as parts are); parts within the limit are kept whole and draw nothing."""
    kept = []
    for part in parts:
        if len(part) > limit:
            part = part[torch.randperm(len(part), generator=gen)[:limit]].sort().values
        kept.append(part)
    return kept


def build_data(config: Config, network: Network, data_dir: str | None) -> FederatedData:
    """Load (and, with `data.normalize`, standardise) and partition the data (seeded), and draw
    the honest-loss sample and the root set. With `data.byzantine_data = false` only the
    honest clients of `network` get data; with `data.partition = "communities"` labels are dealt
    by the communities of its graph; with `data.client_samples` each client keeps a seeded
    random subset of its part (`capped`)."""
    byzantine = network.byzantine
    dataset = load_dataset(
        config.data.name,
        data_dir=data_dir or config.data.dir,
        seed=config.seed,
        **config.data.options,
    )
    if config.data.normalize:
        dataset = standardized(dataset)
    holders = None
    if not config.data.byzantine_data:
        holders = (~byzantine).nonzero().flatten().tolist()
    groups = None
    if config.data.partition == "communities" and network.graph is not None:
        groups = topology.communities(network.graph)
    parts = partition(
        dataset.y_train,
        config.data.num_clients,
        config.data.partition,
        generator=generator(config.seed, "partition"),
        alpha=config.data.alpha,
        min_size=config.data.min_size,
        shards_per_client=config.data.shards_per_client,
        communities=groups,
        holders=holders,
    )
    if config.data.client_samples is not None:
        parts = capped(parts, config.data.client_samples, generator(config.seed, "client_samples"))
    root = torch.randperm(len(dataset.y_train), generator=generator(config.seed, "root"))
    probe, node_probe = honest_train_sample(config, parts, byzantine)
    return FederatedData(
        dataset=dataset,
        parts=parts,
        clients=ClientData.from_parts(dataset.x_train, dataset.y_train, parts),
        histogram=label_histogram(dataset.y_train, parts, dataset.num_classes),
        train_eval_index=probe,
        root=ClientData.from_parts(
            dataset.x_train, dataset.y_train, [root[: config.algorithm.root_size].sort().values]
        ),
        node_test_index=node_test_sample(config, len(dataset.y_test)),
        node_train_index=node_probe,
    )


def build_model(config: Config, input_shape, num_classes: int) -> tuple[FlatModel, torch.Tensor]:
    """The flat model and its seeded initial vector `[d]`."""
    model = FlatModel.build(
        config.model.name, input_shape, num_classes, config.model.widths(), config.model.conv()
    )
    return model, model.init(generator(config.seed, "model-init"))


def build_setup(config: Config, data_dir: str | None = None) -> Setup:
    """Data, network and model of `config`, on `config.device` (`fedpdmm.devices.place`). Every
    name, rule, parameter and the device are checked before any data is loaded, and the run's
    memory before any state is allocated."""
    device = devices.resolve(config.device)
    check_names(config)
    network = build_network(config)
    for name in config.algorithms:
        build_algorithm(name, config, network)
    data = build_data(config, network, data_dir)
    dataset = data.dataset
    num_train = len(dataset.y_train)
    resources.check_root_size(config, num_train)
    resources.check_memory(
        config,
        resources.num_parameters(
            config.model.name,
            dataset.input_shape,
            dataset.num_classes,
            config.model.widths(),
            config.model.conv(),
        ),
        num_train,
        num_edges=None if network.edges is None else network.edges.num_directed_edges,
    )
    model, x0 = build_model(config, dataset.input_shape, dataset.num_classes)
    return devices.place(Setup(config, data, network, model, x0), device)


def with_byzantine(setup: Setup, byzantine: torch.Tensor) -> Setup:
    """The same setup with another Byzantine set (and its honest training-loss sample)."""
    if torch.equal(setup.network.byzantine, byzantine):
        return setup
    probe, node_probe = honest_train_sample(setup.config, setup.data.parts, byzantine)
    return replace(
        setup,
        network=setup.network.with_byzantine(byzantine),
        data=replace(setup.data, train_eval_index=probe, node_train_index=node_probe),
    )
