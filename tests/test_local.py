"""The local solver: every execution path takes the same SGD steps on the same batches."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from fedpdmm.batched import DropoutMasks, Layer
from fedpdmm.local import ClientData, batch_positions, evaluate, linear_relu_layers, train
from fedpdmm.models import ConvSpec, FlatModel
from fedpdmm.seeding import generator

CLIENTS = 4
CLASSES = 3
SHAPE = (1, 8, 8)
MODELS = {"logreg": (), "mlp": (12, 7), "cnn": ()}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: these tiny problems run slower (and erratically) on a busy machine with
    more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def toy_data(samples: int = 80, seed: int = 0) -> ClientData:
    gen = generator(seed, "toy")
    features = torch.randn(samples, *SHAPE, generator=gen)
    labels = torch.randint(CLASSES, (samples,), generator=gen)
    parts = list(torch.randperm(samples, generator=gen).tensor_split(CLIENTS))
    return ClientData.from_parts(features, labels, parts)


def build(name: str) -> FlatModel:
    return FlatModel.build(name, SHAPE, CLASSES, MODELS[name] or (200,))


def problem(model: FlatModel, dtype: torch.dtype = torch.float32):
    start = torch.stack([model.init(generator(0, "init", k)) for k in range(CLIENTS)]).to(dtype)
    center = torch.stack([model.init(generator(0, "center", k)) for k in range(CLIENTS)]).to(dtype)
    rho = torch.tensor([0.0, 0.5, 2.0, 4.0], dtype=dtype)
    return start, center, rho


def naive_float64(
    model, start, data, clients, round_index, *, steps, batch_size, lr, center, rho, linear=None
):
    """Client after client, step after step, with autograd in float64."""
    positions = batch_positions(data, clients, round_index, steps, batch_size, seed=0)
    rows = []
    for row, x in enumerate(start.double()):
        for step in range(steps):
            batch = positions[row, step]
            inputs = data.features[data.sample_index[batch]].double()
            x = x.detach().requires_grad_(True)
            (gradient,) = torch.autograd.grad(model.loss(x, inputs, data.labels[batch]), x)
            pull = rho[row] * (x - center[row].double()) if center is not None else 0.0
            offset = linear[row].double() if linear is not None else 0.0
            x = x - lr * (gradient + offset + pull)
        rows.append(x.detach())
    return torch.stack(rows)


def modes_of(name: str) -> list[str]:
    return ["auto", "batched", "vmap", "loop"] + (["fused"] if name != "cnn" else [])


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("prox", [False, True])
@pytest.mark.parametrize("linear", [False, True])
def test_every_path_equals_a_naive_float64_loop(name: str, prox: bool, linear: bool) -> None:
    """Also with the linear term of SCAFFOLD's corrected steps (`linear`)."""
    model, data = build(name), toy_data()
    start, center, rho = problem(model)
    clients = torch.arange(CLIENTS)
    kwargs = dict(steps=3, batch_size=5, lr=0.1)
    prox_terms = dict(center=center, rho=rho) if prox else dict(center=None, rho=0.0)
    if linear:
        prox_terms["linear"] = 0.3 * torch.randn(start.shape, generator=generator(0, "linear"))
    expected = naive_float64(model, start, data, clients, 2, **kwargs, **prox_terms)
    assert (expected - start.double()).abs().max() > 1e-2
    for mode in modes_of(name):
        got = train(model, start, data, clients, 2, seed=0, mode=mode, **kwargs, **prox_terms)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5, msg=mode)


def torch_sgd(model, start, data, clients, round_index, *, steps, batch_size, lr, **terms):
    """Each client as a real `nn.Module` trained by `torch.optim.SGD` (momentum, weight decay),
    on the objective with its prox and linear terms, in float64; two rounds of `steps` each, the
    optimizer (its momentum buffer) kept between them. Returns the rows after each round."""
    from fedpdmm.models import build_module

    center, rho, linear = terms["center"], terms["rho"], terms["linear"]
    after = [[], []]
    for row in range(len(clients)):
        module = build_module(model_name_of(model), SHAPE, CLASSES, model_hidden_of(model))
        module = module.to_empty(device="cpu").double()
        torch.nn.utils.vector_to_parameters(start[row].double(), module.parameters())
        optimizer = torch.optim.SGD(
            module.parameters(), lr=lr, momentum=terms["momentum"], weight_decay=terms["decay"]
        )
        for turn in (0, 1):
            positions = batch_positions(data, clients, round_index + turn, steps, batch_size, 0)
            for step in range(steps):
                batch = positions[row, step]
                inputs = data.features[data.sample_index[batch]].double()
                flat = torch.nn.utils.parameters_to_vector(module.parameters())
                loss = F.cross_entropy(module(inputs), data.labels[batch])
                loss = loss + linear[row].double() @ flat
                loss = loss + 0.5 * rho[row] * (flat - center[row].double()).square().sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            after[turn].append(torch.nn.utils.parameters_to_vector(module.parameters()).detach())
    return torch.stack(after[0]), torch.stack(after[1])


def model_name_of(model: FlatModel) -> str:
    children = [type(c) for c in model.module.children()]
    if torch.nn.Conv2d in [type(m) for m in model.module.modules()]:
        return "cnn"
    return "logreg" if children.count(torch.nn.Linear) == 1 else "mlp"


def model_hidden_of(model: FlatModel) -> tuple[int, ...]:
    linears = [m for m in model.module.children() if type(m) is torch.nn.Linear]
    return tuple(m.out_features for m in linears[:-1]) or (200,)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize(("momentum", "decay"), [(0.9, 0.0), (0.0, 1e-2), (0.9, 1e-2)])
def test_momentum_and_weight_decay_equal_torch_sgd(name: str, momentum: float, decay: float):
    """Every path, with the prox and linear terms, over two rounds that share the buffer."""
    model, data = build(name), toy_data()
    start, center, rho = problem(model)
    clients = torch.arange(CLIENTS)
    linear = 0.3 * torch.randn(start.shape, generator=generator(0, "linear"))
    kwargs = dict(steps=3, batch_size=5, lr=0.1)
    terms = dict(center=center, rho=rho, linear=linear)
    first, second = torch_sgd(
        model, start, data, clients, 2, **kwargs, **terms, momentum=momentum, decay=decay
    )
    plain = train(model, start, data, clients, 2, seed=0, **kwargs, **terms)
    assert (first - plain.double()).abs().max() > 1e-4  # the options change the steps
    for mode in modes_of(name):
        velocity = torch.zeros_like(start)
        options = dict(momentum=momentum, weight_decay=decay, velocity=velocity, mode=mode)
        got = train(model, start, data, clients, 2, seed=0, **kwargs, **terms, **options)
        torch.testing.assert_close(got.double(), first, atol=5e-5, rtol=1e-5, msg=mode)
        got = train(model, got, data, clients, 3, seed=0, **kwargs, **terms, **options)
        torch.testing.assert_close(got.double(), second, atol=5e-5, rtol=1e-5, msg=mode)


DROPOUT_NET = ((5,), ConvSpec((3, 4), 3, 1, "last", (0.3, 0.5)))


def naive_dropout_net(
    model, start, data, clients, round_index, *, steps, batch_size, lr, masks="client",
    channel=False,
):  # fmt: skip
    """Client after client in float64 with autograd, the dropout masks drawn in the documented
    order from `(seed 0, "dropout", client, round)`: per step, the conv-stack mask `[B, C, H, W]`
    then the hidden layer's `[B, 5]`. `masks = "shared"`: the same masks for every client, drawn
    in that order from `(seed 0, "dropout", "shared", round)`; `"fixed"`: the first two draws of
    `(seed 0, "dropout", "fixed")` at every step of every round. `channel`: the conv-stack mask
    is `[B, C, 1, 1]`, one draw per channel."""
    positions = batch_positions(data, clients, round_index, steps, batch_size, seed=0)
    common_gen = (
        generator(0, "dropout", "fixed")
        if masks == "fixed"
        else generator(0, "dropout", "shared", round_index)
    )
    common: dict[tuple[int, int], torch.Tensor] = {}  # drawn by the first client, in order

    def mask(gen, step: int, place: int, shape, keep: float) -> torch.Tensor:
        if masks == "client":
            return (torch.rand(shape, generator=gen) < keep).double() / keep
        key = (step if masks == "shared" else 0, place)
        if key not in common:
            common[key] = (torch.rand(shape, generator=common_gen) < keep).double() / keep
        return common[key]

    rows = []
    for row, x in enumerate(start.double()):
        gen = generator(0, "dropout", int(clients[row]), round_index)
        for step in range(steps):
            batch = positions[row, step]
            inputs = data.features[data.sample_index[batch]].double()
            x = x.detach().requires_grad_(True)
            p = model.unflatten(x)
            h = F.relu(F.conv2d(inputs, p["0.weight"], p["0.bias"], padding=1))
            h = F.max_pool2d(F.relu(F.conv2d(h, p["2.weight"], p["2.bias"], padding=1)), 2)
            h = h * mask(gen, step, 0, (*h.shape[:2], 1, 1) if channel else h.shape, 0.7)
            h = F.relu(F.linear(h.flatten(1), p["7.weight"], p["7.bias"]))
            h = h * mask(gen, step, 1, h.shape, 0.5)
            logits = F.linear(h, p["10.weight"], p["10.bias"])
            loss = F.cross_entropy(logits, data.labels[batch])
            (gradient,) = torch.autograd.grad(loss, x)
            x = x - lr * gradient
        rows.append(x.detach())
    return torch.stack(rows)


def test_dropout_masks_follow_each_clients_own_stream() -> None:
    """The batched path with dropout equals a naive loop with the documented masks, a client
    alone trains as among all, and evaluation never drops."""
    model = FlatModel.build("cnn", SHAPE, CLASSES, *DROPOUT_NET)
    assert [type(m).__name__ for m in model.module][5:11] == [
        "Dropout",
        "Flatten",
        "Linear",
        "ReLU",
        "Dropout",
        "Linear",
    ]
    data = toy_data()
    start, _, _ = problem(model)
    clients = torch.arange(CLIENTS)
    kwargs = dict(steps=3, batch_size=5, lr=0.1)
    expected = naive_dropout_net(model, start, data, clients, 2, **kwargs)
    got = train(model, start, data, clients, 2, seed=0, **kwargs)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)
    alone = train(model, start[2:3], data, clients[2:3], 2, seed=0, **kwargs)
    torch.testing.assert_close(alone[0], got[2], atol=1e-6, rtol=1e-6)
    plain = FlatModel.build("cnn", SHAPE, CLASSES, DROPOUT_NET[0], ConvSpec((3, 4), 3, 1, "last"))
    assert not torch.allclose(train(plain, start, data, clients, 2, seed=0, **kwargs), got)
    inputs = data.features[:20]
    accuracy, loss = evaluate(model, got, inputs, data.labels[:20])
    plain_accuracy, plain_loss = evaluate(plain, got, inputs, data.labels[:20])
    assert torch.equal(accuracy, plain_accuracy) and torch.equal(loss, plain_loss)
    for mode in ("loop", "vmap"):
        with pytest.raises(ValueError, match="dropout"):
            train(model, start, data, clients, 2, seed=0, mode=mode, **kwargs)


def test_shared_dropout_masks_are_one_mask_per_step_for_all_clients() -> None:
    """`dropout_masks = "shared"`: the batched path equals the naive loop in which every client
    uses the same documented masks; a client alone trains as among all; the masks differ from
    the per-client ones."""
    hidden, conv = DROPOUT_NET
    model = FlatModel.build("cnn", SHAPE, CLASSES, hidden, replace(conv, dropout_masks="shared"))
    assert model.dropout_masks == "shared"
    data = toy_data()
    start, _, _ = problem(model)
    start = start[:1].expand_as(start).clone()  # one start: only the batches tell clients apart
    clients = torch.arange(CLIENTS)
    kwargs = dict(steps=3, batch_size=5, lr=0.1)
    expected = naive_dropout_net(model, start, data, clients, 2, masks="shared", **kwargs)
    got = train(model, start, data, clients, 2, seed=0, **kwargs)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)
    alone = train(model, start[1:2], data, clients[1:2], 2, seed=0, **kwargs)
    torch.testing.assert_close(alone[0], got[1], atol=1e-6, rtol=1e-6)
    own = FlatModel.build("cnn", SHAPE, CLASSES, hidden, conv)
    assert not torch.allclose(train(own, start, data, clients, 2, seed=0, **kwargs), got)


def test_fixed_dropout_masks_are_one_mask_for_the_whole_run() -> None:
    """`dropout_masks = "fixed"`: every client, step and round uses the first draws of
    `(seed 0, "dropout", "fixed")`; equal to the naive loop with those masks."""
    hidden, conv = DROPOUT_NET
    model = FlatModel.build("cnn", SHAPE, CLASSES, hidden, replace(conv, dropout_masks="fixed"))
    masks = DropoutMasks([0, 1, 2], 0, 4, mode="fixed")
    fixed_gen = generator(0, "dropout", "fixed")
    first = (torch.rand((5, 4, 2, 2), generator=fixed_gen) < 0.7).float() / 0.7
    layer = Layer("dropout", p=0.3)
    for round_index in (1, 7):
        masks = DropoutMasks([0, 1, 2], 0, round_index, mode="fixed")
        for _ in range(3):  # steps
            drawn = masks.rows(0, 3)(5, layer, (5, 4, 2, 2))
            assert drawn.shape == (3, 5, 4, 2, 2)
            assert all(torch.equal(row, first) for row in drawn)
    data = toy_data()
    start, _, _ = problem(model)
    clients = torch.arange(CLIENTS)
    kwargs = dict(steps=3, batch_size=5, lr=0.1)
    got = train(model, start, data, clients, 2, seed=0, **kwargs)
    expected = naive_dropout_net(model, start, data, clients, 2, masks="fixed", **kwargs)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)
    later = train(model, start, data, clients, 5, seed=0, **kwargs)
    torch.testing.assert_close(
        later.double(), naive_dropout_net(model, start, data, clients, 5, masks="fixed", **kwargs),
        atol=2e-5, rtol=1e-5,
    )  # fmt: skip


@pytest.mark.parametrize("shared", [False, True])
def test_channel_dropout_drops_whole_channels(shared: bool) -> None:
    """`conv_dropout = "channel"` (`nn.Dropout2d`): the batched path equals the naive loop with
    one documented draw per sample and channel, per client or shared."""
    hidden, conv = DROPOUT_NET
    spec = replace(conv, channel_dropout=True, dropout_masks="shared" if shared else "client")
    model = FlatModel.build("cnn", SHAPE, CLASSES, hidden, spec)
    assert type(model.module[5]).__name__ == "Dropout2d"
    data = toy_data()
    start, _, _ = problem(model)
    clients = torch.arange(CLIENTS)
    kwargs = dict(steps=3, batch_size=5, lr=0.1)
    expected = naive_dropout_net(
        model,
        start,
        data,
        clients,
        2,
        masks="shared" if shared else "client",
        channel=True,
        **kwargs,
    )
    got = train(model, start, data, clients, 2, seed=0, **kwargs)
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=1e-5)
    element = FlatModel.build("cnn", SHAPE, CLASSES, hidden, replace(spec, channel_dropout=False))
    assert not torch.allclose(train(element, start, data, clients, 2, seed=0, **kwargs), got)


def test_a_cnn_without_relu_after_its_last_convolution() -> None:
    """`last_conv_relu = false` (the bucketing paper's network): conv, ReLU, conv, pool; the
    same parameters; the batched path equals the per-client loop on it."""
    conv = ConvSpec((3, 4), 3, 1, "last")
    model = FlatModel.build("cnn", SHAPE, CLASSES, (5,), replace(conv, last_relu=False))
    kinds = [type(m).__name__ for m in model.module][:5]
    assert kinds == ["Conv2d", "ReLU", "Conv2d", "MaxPool2d", "Flatten"]
    with_relu = FlatModel.build("cnn", SHAPE, CLASSES, (5,), conv)
    assert model.dim == with_relu.dim
    data = toy_data()
    start, _, _ = problem(model)
    clients = torch.arange(CLIENTS)
    kwargs = dict(steps=2, batch_size=5, lr=0.1, seed=0)
    got = train(model, start, data, clients, 1, mode="batched", **kwargs)
    loop = train(model, start, data, clients, 1, mode="loop", **kwargs)
    torch.testing.assert_close(got, loop, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, train(with_relu, start, data, clients, 1, **kwargs))


@pytest.mark.parametrize(
    ("hidden", "conv", "dim"),
    [
        ((120, 84), ConvSpec(), 107_786),  # LeNet-5 on MNIST, as before
        ((128,), ConvSpec((32, 64), 3, 0, "last", (0.25, 0.5)), 1_199_882),  # PyTorch's example
        ((500,), ConvSpec((20, 50), 5, 0, "each"), 431_080),  # ByzFL's cnn_mnist
    ],
)
def test_the_peers_networks_are_configs(hidden, conv, dim) -> None:
    assert FlatModel.build("cnn", (1, 28, 28), 10, hidden, conv).dim == dim


def test_momentum_needs_its_buffer() -> None:
    model, data = build("logreg"), toy_data()
    start, _, _ = problem(model)
    with pytest.raises(ValueError, match="velocity"):
        train(
            model,
            start,
            data,
            torch.arange(CLIENTS),
            1,
            steps=1,
            batch_size=2,
            lr=0.1,
            seed=0,
            momentum=0.9,
        )


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_fused_path_equals_vmap_in_float64(name: str) -> None:
    model, data = build(name), toy_data()
    start, center, rho = problem(model, torch.float64)
    clients = torch.arange(CLIENTS)
    kwargs = dict(steps=4, batch_size=6, lr=0.2, seed=1, center=center, rho=rho)
    fused = train(model, start, data, clients, 1, mode="fused", **kwargs)
    vmapped = train(model, start, data, clients, 1, mode="vmap", **kwargs)
    torch.testing.assert_close(fused, vmapped, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_client_alone_trains_as_its_row_among_all(name: str) -> None:
    model, data = build(name), toy_data()
    start, center, rho = problem(model)
    kwargs = dict(steps=3, batch_size=4, lr=0.1, seed=5)
    together = train(model, start, data, torch.arange(CLIENTS), 3, center=center, rho=rho, **kwargs)
    alone = train(
        model, start[3:], data, torch.tensor([3]), 3, center=center[3:], rho=rho[3:], **kwargs
    )
    torch.testing.assert_close(alone[0], together[3], atol=1e-6, rtol=1e-6)


def test_batches_depend_only_on_seed_client_and_round() -> None:
    data = toy_data()
    everyone = batch_positions(data, torch.arange(CLIENTS), 7, steps=3, batch_size=5, seed=1)
    alone = batch_positions(data, torch.tensor([3]), 7, steps=3, batch_size=5, seed=1)
    assert everyone.shape == (CLIENTS, 3, 5)
    assert torch.equal(alone[0], everyone[3])
    for client in range(CLIENTS):
        start, size = int(data.offsets[client]), int(data.sizes[client])
        assert bool(((everyone[client] >= start) & (everyone[client] < start + size)).all())
    other_round = batch_positions(data, torch.tensor([3]), 8, steps=3, batch_size=5, seed=1)
    other_seed = batch_positions(data, torch.tensor([3]), 7, steps=3, batch_size=5, seed=2)
    assert not torch.equal(other_round, alone)
    assert not torch.equal(other_seed, alone)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_few_steps_lower_the_loss_on_a_separable_problem(name: str) -> None:
    gen = generator(0, "separable")
    labels = torch.arange(120) % CLASSES
    features = torch.randn(120, *SHAPE, generator=gen) * 0.1
    features[:, 0, :2, :] += 3.0 * (labels.view(-1, 1, 1) == 0)
    features[:, 0, 2:4, :] += 3.0 * (labels.view(-1, 1, 1) == 1)
    features[:, 0, 4:6, :] += 3.0 * (labels.view(-1, 1, 1) == 2)
    data = ClientData.from_parts(features, labels, list(torch.arange(120).tensor_split(CLIENTS)))
    model = build(name)
    start = model.init(generator(0, "init")).expand(CLIENTS, -1)
    trained = train(
        model, start, data, torch.arange(CLIENTS), 1, steps=15, batch_size=16, lr=0.1, seed=0
    )
    _, before = evaluate(model, start, features, labels)
    _, after = evaluate(model, trained, features, labels)
    assert bool((after < 0.7 * before).all()), (before, after)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_a_large_rho_pulls_to_the_center_and_zero_rho_ignores_it(name: str) -> None:
    model, data = build(name), toy_data()
    start, center, _ = problem(model)
    rho = torch.tensor([0.0, 0.0, 45.0, 45.0])
    kwargs = dict(steps=25, batch_size=4, lr=0.02, seed=0)
    clients = torch.arange(CLIENTS)
    pulled = train(model, start, data, clients, 1, center=center, rho=rho, **kwargs)
    free = train(model, start, data, clients, 1, **kwargs)
    torch.testing.assert_close(pulled[:2], free[:2], atol=1e-6, rtol=1e-6)
    distance = (pulled[2:] - center[2:]).norm(dim=1)
    assert bool((distance < 0.05 * (start[2:] - center[2:]).norm(dim=1)).all()), distance


def test_evaluate_equals_a_plain_loop_over_models() -> None:
    model, data = build("mlp"), toy_data()
    params, _, _ = problem(model)
    params[2, 5] = float("nan")
    inputs, labels = data.features[:50], data.labels[:50]
    accuracy, loss = evaluate(model, params, inputs, labels, chunk=7, models_per_chunk=3)
    for row in (0, 1, 3):
        logits = model.logits(params[row].double(), inputs.double())
        expected_accuracy = (logits.argmax(-1) == labels).double().mean()
        assert float(accuracy[row]) == pytest.approx(float(expected_accuracy), abs=1e-12)
        expected_loss = F.cross_entropy(logits, labels)
        assert float(loss[row]) == pytest.approx(float(expected_loss), rel=1e-5)
    assert torch.isnan(accuracy[2]) and torch.isnan(loss[2])


@pytest.mark.parametrize("chunks", [{}, {"chunk": 7, "models_per_chunk": 3}])
def test_cnn_evaluation_equals_the_vmap_one(chunks: dict) -> None:
    """`auto` scores CNNs with the batched path's per-model convolutions (dropout off)."""
    model = FlatModel.build("cnn", SHAPE, CLASSES, *DROPOUT_NET)
    data = toy_data()
    params, _, _ = problem(model)
    params = torch.cat([params, params * 2.0])
    params[3, 0] = float("nan")
    inputs, labels = data.features, data.labels
    batched_scores = evaluate(model, params, inputs, labels, **chunks)
    plain = evaluate(model, params, inputs, labels, mode="vmap")
    torch.testing.assert_close(batched_scores[0], plain[0], atol=0, rtol=0, equal_nan=True)
    torch.testing.assert_close(batched_scores[1], plain[1], atol=1e-5, rtol=1e-5, equal_nan=True)
    assert torch.isnan(batched_scores[0][3])


@pytest.mark.parametrize("name", ["logreg", "mlp"])
@pytest.mark.parametrize("chunks", [{}, {"chunk": 7, "models_per_chunk": 3}])
def test_fused_evaluation_equals_the_vmap_one(name: str, chunks: dict) -> None:
    model, data = build(name), toy_data()
    params, _, _ = problem(model)
    params = torch.cat([params, params * 3.0])  # larger logits: a wider spread of losses
    params[5, 1] = float("inf")
    inputs, labels = data.features, data.labels
    fused = evaluate(model, params, inputs, labels, mode="fused", **chunks)
    plain = evaluate(model, params, inputs, labels, mode="vmap")
    torch.testing.assert_close(fused[0], plain[0], atol=1.5 / len(labels), rtol=0, equal_nan=True)
    torch.testing.assert_close(fused[1], plain[1], atol=1e-5, rtol=1e-5, equal_nan=True)
    assert torch.isnan(fused[0][5]) and torch.isnan(fused[1][5])
    with pytest.raises(ValueError, match="Linear/ReLU"):
        evaluate(build("cnn"), params[:, :1], inputs, labels, mode="fused")


def test_linear_relu_layers_finds_the_stacks_and_rejects_the_cnn() -> None:
    mlp = linear_relu_layers(build("mlp"))
    assert mlp is not None and [layer.shape for layer in mlp] == [(12, 64), (7, 12), (3, 7)]
    logreg = linear_relu_layers(build("logreg"))
    assert logreg is not None and [layer.shape for layer in logreg] == [(3, 64)]
    assert linear_relu_layers(build("cnn")) is None


def test_bad_arguments_name_the_value() -> None:
    model, data = build("cnn"), toy_data()
    start, center, _ = problem(model)
    clients = torch.arange(CLIENTS)
    kwargs = dict(steps=1, batch_size=2, lr=0.1, seed=0)
    with pytest.raises(ValueError, match=r"mode='fast' .* auto, fused, batched, vmap, loop"):
        train(model, start, data, clients, 1, mode="fast", **kwargs)
    with pytest.raises(ValueError, match="mode='fused' needs a Linear/ReLU model"):
        train(model, start, data, clients, 1, mode="fused", **kwargs)
    with pytest.raises(ValueError, match="rho has 3 values for 4 clients"):
        train(model, start, data, clients, 1, center=center, rho=torch.ones(3), **kwargs)
