"""Device placement (`fedpdmm.devices`), checked without a GPU: on the CPU, and on PyTorch's
`meta` device, which holds shapes but no values and refuses to mix with CPU tensors like CUDA
does. The CUDA path itself is not run by these tests (CI has no GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedpdmm import config, devices, engine
from fedpdmm.errors import ConfigError
from fedpdmm.local import batch_positions
from fedpdmm.setup import build_setup

META = torch.device("meta")
TINY = ["data.num_clients=4", "model.hidden=[8]", "rounds=2", "eval_every=1", "local.steps=2"]


@pytest.fixture(params=["server", "ring"])
def setup(request):
    extra = [] if request.param == "server" else ["topology.name=ring"]
    return build_setup(config.load(None, [*TINY, *extra]))


def test_place_moves_every_tensor_but_the_bookkeeping_and_leaves_the_original(setup) -> None:
    placed = devices.place(setup, META)
    moved = dict(devices.tensors(placed))
    assert "x0" in moved and "data.clients.features" in moved
    assert "data.dataset.x_test" in moved and "network.byzantine" in moved
    if setup.network.edges is not None:
        assert "network.edges.reverse" in moved
    assert all(tensor.device == META for tensor in moved.values()), [
        path for path, tensor in moved.items() if tensor.device != META
    ]
    # numbers read on the host stay there
    assert placed.data.clients.sizes.device.type == "cpu"
    assert placed.data.clients.offsets.device.type == "cpu"
    assert all(part.device.type == "cpu" for part in placed.data.parts)
    # the CPU setup is unchanged, and placing on the CPU is the identity
    assert all(tensor.device.type == "cpu" for _, tensor in devices.tensors(setup))
    assert devices.place(setup, torch.device("cpu")) is setup


def test_batches_are_drawn_on_the_cpu_and_delivered_on_the_data_device(setup) -> None:
    clients = torch.arange(setup.config.data.num_clients)
    on_cpu = batch_positions(setup.data.clients, clients, 3, steps=2, batch_size=5, seed=1)
    placed = devices.place(setup, META)
    on_meta = batch_positions(placed.data.clients, clients, 3, steps=2, batch_size=5, seed=1)
    assert on_cpu.device.type == "cpu" and on_meta.device == META
    assert on_meta.shape == on_cpu.shape == (len(clients), 2, 5)


def test_the_default_device_applies_inside_the_rounds_only_off_the_cpu() -> None:
    with devices.default_device(torch.device("cpu")):
        assert torch.zeros(1).device.type == "cpu"
    with devices.default_device(META):
        assert torch.zeros(1).device == META
    assert torch.zeros(1).device.type == "cpu"


@pytest.mark.parametrize("name", ["gpu", "CPU", "", "cuda:", "cuda:-1", "cuda:0x", "cuda 0", "mps"])
def test_a_bad_device_name_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="not a device name"):
        config.load(None, [f'device="{name}"'])


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device")
def test_cuda_without_a_gpu_fails_before_loading_anything(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no CUDA device"):
        engine.run(config.load(None, [*TINY, 'device="cuda"']))
    out = tmp_path / "run"
    script = Path(sys.executable).with_name("fedpdmm")
    command = [str(script), "run", "--device", "cuda:1", "--out", str(out), "--quiet"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 2
    lines = finished.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], finished.stderr
    assert not out.exists()


def test_cpu_named_explicitly_gives_the_default_numbers() -> None:
    _, default = engine.run(config.load(None, TINY))
    _, named = engine.run(config.load(None, [*TINY, 'device="cpu"']))
    strip = [
        {k: v for k, v in row.items() if not k.endswith("time")} for r in default for row in r.rows
    ]
    same = [
        {k: v for k, v in row.items() if not k.endswith("time")} for r in named for row in r.rows
    ]
    assert strip == same
