"""fedpdmm on Flower: the protocol equals the engine, faults are handled, a real federation works.

The protocol tests run the app's server and client code in one process (`LoopbackTransport`);
the integration tests start a real SuperLink and SuperNodes on 127.0.0.1.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

if os.environ.get("CI"):
    import flwr  # noqa: F401  (CI installs the extra: a missing Flower must fail, not skip)
pytest.importorskip("flwr", reason="Flower is not installed: pip install 'fedpdmm[flower]'")

from fedpdmm import config as config_module
from fedpdmm import engine
from fedpdmm.algorithms import FedAvg, PDMMStar
from fedpdmm.errors import ConfigError
from fedpdmm.flower.client import RoundReply
from fedpdmm.flower.launcher import LocalFederation
from fedpdmm.flower.loopback import run_loopback
from fedpdmm.flower.server import check_message
from fedpdmm.flower.settings import (
    check_deployable,
    read_node_config,
    read_run_config,
    run_config_for,
)
from fedpdmm.results import read_metrics
from fedpdmm.setup import build_setup

FLOAT_TOLERANCE = 1e-5
COMPARED = (
    "test_accuracy",
    "test_loss",
    "train_loss",
    "honest_accuracy_mean",
    "honest_accuracy_min",
    "honest_accuracy_max",
    "consensus_distance",
)
EXACT = ("algorithm", "attack", "target", "round", "num_byzantine", "samples", "dropped_messages")


def small_config(**sections) -> config_module.Config:
    raw = {
        "rounds": 3,
        "eval_every": 1,
        "algorithms": ["pdmm", "fedavg"],
        "attacks": ["none", "sign_flip"],
        "data": {"name": "digits", "num_clients": 4},
        "local": {"steps": 3},
        "attack": {"num_byzantine": 1, "target": ["message", "update"]},
    }
    raw.update(sections)
    return config_module.validate(raw)


def settings_of(config, tmp_path: Path, **options):
    return read_run_config(run_config_for(config, out_dir=tmp_path / "out", **options))


def assert_rows_match(reference, rows, tolerance):
    assert len(rows) == len(reference)
    for want, got in zip(reference, rows, strict=True):
        for key in EXACT:
            assert got[key] == want[key], key
        for key in COMPARED:
            if math.isnan(want[key]):
                assert math.isnan(got[key]), key
            else:
                assert abs(got[key] - want[key]) <= tolerance, (key, want[key], got[key])


# -- the protocol, in one process ---------------------------------------------------------------


def test_protocol_equals_engine_bit_for_bit(tmp_path):
    config = small_config(rounds=2, attacks=["none", "gaussian"])
    _, reference = engine.run(config)
    _, outcomes = run_loopback(settings_of(config, tmp_path))
    assert [(o.algorithm, o.attack, o.target) for o in outcomes] == engine.combinations(config)
    for want, got in zip(reference, outcomes, strict=True):
        assert_rows_match(want.rows, got.rows, tolerance=0.0)
        assert all(row["missing_replies"] == 0 for row in got.rows)


def test_an_unreliable_network_is_drawn_once_for_both_runtimes(tmp_path):
    """Loss, participation and partial stragglers go through the same round step on Flower: the
    loopback federation gives the engine's numbers, lost and active counts included."""
    config = small_config(
        rounds=3,
        algorithms=["pdmm", "fedavg", "scaffold"],
        network={"loss": 0.3, "participation": 0.7, "stragglers": 0.3},
        attack={"num_byzantine": 1, "target": "update", "state": "received"},
    )
    _, reference = engine.run(config)
    _, outcomes = run_loopback(settings_of(config, tmp_path))
    for want, got in zip(reference, outcomes, strict=True):
        assert_rows_match(want.rows, got.rows, tolerance=0.0)
        for key in ("lost_messages", "active_nodes"):
            assert [row[key] for row in got.rows] == [row[key] for row in want.rows]
    assert reference[0].rows[-1]["lost_messages"] > 0


def test_momentum_buffers_live_on_the_nodes_and_give_the_engine_numbers(tmp_path):
    """`local.momentum` and `local.weight_decay`: each SuperNode keeps its own buffer across
    rounds (and while it is not sampled), and the federation gives the engine's numbers."""
    config = small_config(
        rounds=3,
        algorithms=["pdmm", "fedavg"],
        local={"steps": 3, "momentum": 0.9, "weight_decay": 1e-3},
        network={"participation": 0.7},
    )
    _, reference = engine.run(config)
    _, outcomes = run_loopback(settings_of(config, tmp_path))
    for want, got in zip(reference, outcomes, strict=True):
        assert_rows_match(want.rows, got.rows, tolerance=0.0)
    _, plain = engine.run(small_config(rounds=3, algorithms=["pdmm", "fedavg"]))
    assert reference[0].rows[-1]["test_loss"] != plain[0].rows[-1]["test_loss"]


def test_robust_rules_on_the_server_equal_engine(tmp_path):
    config = small_config(
        rounds=2, algorithms=["fedavg+median", "pdmm+trimmed_mean"], attacks=["sign_flip"]
    )
    _, reference = engine.run(config)
    _, outcomes = run_loopback(settings_of(config, tmp_path))
    for want, got in zip(reference, outcomes, strict=True):
        assert_rows_match(want.rows, got.rows, tolerance=0.0)


def test_label_flip_on_the_node_equals_engine(tmp_path):
    config = small_config(
        algorithms=["fedavg"], attacks=["label_flip"], attack={"num_byzantine": 2}
    )
    _, reference = engine.run(config)
    _, outcomes = run_loopback(settings_of(config, tmp_path))
    assert_rows_match(reference[0].rows, outcomes[0].rows, tolerance=0.0)


def test_missing_node_drops_its_pdmm_edge_and_rejoins(tmp_path):
    config = small_config(algorithms=["pdmm"], attacks=["none"], rounds=5)
    down = {(2, 3), (3, 3)}  # partition 3 misses rounds 2 and 3, answers again in round 4
    _, outcomes = run_loopback(
        settings_of(config, tmp_path), fault=lambda r, k: "down" if (r, k) in down else None
    )
    rows = {row["round"]: row for row in outcomes[0].rows}
    assert [rows[r]["active_clients"] for r in range(1, 6)] == [4, 3, 3, 4, 4]
    assert rows[5]["missing_replies"] == 2
    assert rows[5]["dropped_messages"] == 2
    assert rows[5]["samples"] == (4 * 5 - 2) * config.local.steps * config.local.batch_size
    assert all(math.isfinite(row["test_loss"]) for row in rows.values())


def test_missing_fedavg_node_is_left_out_of_the_average(tmp_path):
    config = small_config(algorithms=["fedavg"], attacks=["none"], rounds=2)
    _, outcomes = run_loopback(
        settings_of(config, tmp_path), fault=lambda r, k: "down" if k == 0 else None
    )
    final = outcomes[0].rows[-1]
    assert final["missing_replies"] == 2 and final["active_clients"] == 3
    assert math.isfinite(final["test_accuracy"])


@pytest.mark.parametrize(
    "bad",
    [
        torch.ones(7),
        torch.full((5,), float("nan")),
        torch.tensor([1.0, float("inf"), 0.0, 0.0, 0.0]),
        torch.ones(5, dtype=torch.int64),
        torch.ones(1, 5),
        None,
    ],
)
def test_check_message_rejects_malformed_replies(bad):
    assert check_message(bad, 5) is not None
    assert check_message(torch.ones(5), 5) is None


def test_malformed_replies_are_counted_and_never_averaged(tmp_path):
    config = small_config(algorithms=["fedavg", "pdmm"], attacks=["none"], rounds=2)
    junk = RoundReply(torch.full((3,), float("nan")))
    faulty = run_loopback(
        settings_of(config, tmp_path), fault=lambda r, k: junk if k == 1 else None
    )[1]
    for outcome in faulty:
        final = outcome.rows[-1]
        assert final["malformed_replies"] == 2 and final["dropped_messages"] == 2
        assert final["active_clients"] == 4
        assert math.isfinite(final["test_loss"])


def test_a_missing_pdmm_reply_closes_the_edge_and_its_return_reopens_it_without_a_shift():
    algorithm = PDMMStar(num_clients=3, c=0.5, theta=0.5)
    state = algorithm.init(torch.zeros(2))
    server = state.hub._replace(z=torch.tensor([[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]))
    messages = torch.tensor([[2.0, 0.0], [0.0, 2.0], [7.0, 7.0]])
    missing = torch.tensor([True, True, False])  # client 2 did not answer
    updated = algorithm.combine(state._replace(hub=server), messages, missing).hub
    z_open = 0.5 * server.z[:2] + 0.5 * messages[:2]
    assert torch.equal(updated.x, z_open.mean(0) / 0.5)  # mean of the open edges / c
    assert torch.equal(updated.z[2], server.z[2])
    back = algorithm.combine(
        state._replace(hub=updated), updated.z.clone(), torch.ones(3, dtype=torch.bool)
    ).hub
    # the returning edge restarts from z = c x_s (which alone would leave x_s unchanged), not
    # from its stale dual, before the relaxation with its new message
    assert torch.allclose(back.z[2], 0.5 * (0.5 * updated.x) + 0.5 * updated.z[2])


def test_fedavg_averages_the_replies_that_arrived():
    algorithm = FedAvg(num_clients=3)
    state = algorithm.init(torch.zeros(2))
    messages = torch.tensor([[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]])
    arrived = torch.tensor([True, True, False])
    updated = algorithm.combine(state, messages, arrived).hub
    assert torch.equal(updated.x, torch.tensor([2.0, 2.0]))


# -- configuration -------------------------------------------------------------------------------


def test_omniscient_attacks_are_refused_in_deployment():
    with pytest.raises(ConfigError, match=r"'alie' is omniscient.*sign_flip"):
        check_deployable(small_config(attacks=["none", "alie"]))


def test_run_config_round_trips(tmp_path):
    config = small_config()
    settings = settings_of(config, tmp_path, round_timeout=7.5, byzantine_partitions={1, 3})
    assert settings.config == config
    assert settings.round_timeout == 7.5
    assert settings.byzantine_partitions == {1, 3}
    assert settings.out_dir == (tmp_path / "out").absolute()


@pytest.mark.parametrize(
    ("node_config", "message"),
    [
        ({}, "partition-id"),
        ({"partition-id": 4}, r"in \[0, 4\)"),
        ({"partition-id": 1, "byzantine": "maybe"}, "true or false"),
    ],
)
def test_bad_node_config_is_a_one_line_error(tmp_path, node_config, message):
    with pytest.raises(ConfigError, match=message):
        read_node_config(node_config, settings_of(small_config(), tmp_path))


def test_node_role_from_node_config_or_run_config(tmp_path):
    settings = settings_of(small_config(), tmp_path, byzantine_partitions={2})
    assert read_node_config({"partition-id": 2}, settings).byzantine
    assert not read_node_config({"partition-id": 2, "byzantine": False}, settings).byzantine
    assert read_node_config({"partition-id": "1", "byzantine": "true"}, settings).byzantine


# -- a real SuperLink and SuperNodes -------------------------------------------------------------

DEPLOY = {
    "rounds": 2,
    "eval_every": 1,
    "algorithms": ["pdmm", "fedavg"],
    "attacks": ["sign_flip"],
    "data": {"name": "digits", "num_clients": 4},
    "local": {"steps": 3},
    "attack": {"num_byzantine": 1},
}


def _alive(pgid: int) -> list[int]:
    """Non-zombie processes of process group `pgid`."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    config = config_module.validate(DEPLOY)
    byzantine = frozenset(build_setup(config).network.byzantine.nonzero().flatten().tolist())
    federation = LocalFederation(4, tmp_path_factory.mktemp("federation"), byzantine)
    groups: list[int] = []
    try:
        federation.start()
        groups = [process.pid for process in federation.processes.values()]
        yield federation
    finally:
        groups += [process.pid for process in federation.processes.values()]
        federation.stop()
        deadline = time.monotonic() + 10
        while any(_alive(group) for group in groups) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for group in groups for pid in _alive(group)], "processes left running"


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_deployment_metrics_equal_the_engine(federation, tmp_path):
    config = config_module.validate(DEPLOY)
    out = federation.run(config, tmp_path / "run", round_timeout=120, timeout=400)
    _, reference = engine.run(config)
    rows = read_metrics(out / "metrics.csv")
    assert_rows_match([r for o in reference for r in o.rows], rows, FLOAT_TOLERANCE)
    assert all(row["missing_replies"] == 0 and row["malformed_replies"] == 0 for row in rows)
    assert all(row["num_byzantine"] == 1 for row in rows)
    for name in ("summary.md", "accuracy.png", "config.toml", "clients.csv"):
        assert (out / name).exists()


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_killed_supernode_is_counted_and_the_run_completes(federation, tmp_path):
    config = config_module.validate(
        {**DEPLOY, "algorithms": ["pdmm"], "attacks": ["none"], "rounds": 3}
    )
    out = tmp_path / "run"
    process = federation.start_run(config, out, round_timeout=40)
    deadline = time.monotonic() + 300
    while "round 1/3" not in federation.run_log.read_text(errors="replace"):
        assert process.poll() is None and time.monotonic() < deadline, "round 1 never finished"
        time.sleep(0.2)
    federation.kill_node(2)
    federation.finish_run(process, out, timeout=400)
    rows = read_metrics(out / "metrics.csv")
    final = rows[-1]
    assert final["round"] == 3, (out / "summary.md").read_text()
    assert final["missing_replies"] >= 1
    assert final["active_clients"] == 3
    assert math.isfinite(final["test_loss"])


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_simulation_engine_runs_the_same_app_with_the_same_numbers(tmp_path):
    pytest.importorskip("ray", reason="Flower's simulation engine needs ray: flwr[simulation]")
    config = config_module.validate(DEPLOY)
    byzantine = frozenset(build_setup(config).network.byzantine.nonzero().flatten().tolist())
    simulation = LocalFederation(4, tmp_path / "federation", byzantine, simulation=True)
    try:
        simulation.start()
        groups = [process.pid for process in simulation.processes.values()]
        out = simulation.run(config, tmp_path / "run", timeout=400)
        groups += [process.pid for process in simulation.processes.values()]
    finally:
        simulation.stop()
    _, reference = engine.run(config)
    rows = read_metrics(out / "metrics.csv")
    assert_rows_match([r for o in reference for r in o.rows], rows, FLOAT_TOLERANCE)
    deadline = time.monotonic() + 10
    while any(_alive(group) for group in groups) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for group in groups for pid in _alive(group)], "processes left running"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"set_": ["attacks=['alie']"]}, "omniscient"),
        ({"set_": ["data.num_clients=3"]}, "--nodes 4 differs from data.num_clients=3"),
        ({"set_": ["topology.name='ring'"]}, "with a server only"),
    ],
)
def test_flower_local_refuses_bad_configs_before_starting_processes(tmp_path, options, message):
    from fedpdmm.flower.cli import local

    with pytest.raises(ConfigError, match=message):
        local(
            config_path=None,
            nodes=4,
            out=tmp_path / "run",
            data_dir=None,
            round_timeout=60.0,
            simulation=False,
            **options,
        )
    assert not (tmp_path / "run").exists()


# -- the launcher from any install ----------------------------------------------------------------


def test_every_started_process_finds_this_installations_scripts_first(monkeypatch, tmp_path):
    from fedpdmm.flower import launcher

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    env = launcher.flower_environment(tmp_path)
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)
    assert env["PATH"].split(os.pathsep)[1:] == ["/usr/bin", "/bin"]


def _started_under(folder: Path) -> list[int]:
    """Processes whose FLWR_HOME lies under `folder` (started by a launcher using it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(v.startswith(b"FLWR_HOME=" + str(folder).encode()) for v in environ):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
@pytest.mark.parametrize("security", [[], ["--secure"]], ids=["insecure", "secure"])
def test_flower_local_runs_by_absolute_path_with_no_environment_activated(tmp_path, security):
    """The CLI called by its path with a bare PATH, insecure and with TLS and SuperNode
    authentication: the same numbers as the engine, and nothing left behind."""
    script = Path(sys.executable).with_name("fedpdmm")
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "TMPDIR": str(temporary),
        "FEDPDMM_DATA": os.environ.get("FEDPDMM_DATA", ""),
    }
    out = tmp_path / "run"
    command = [str(script), "flower", "local", *security, "--nodes", "2", "--out", str(out)]
    overrides = ["rounds=1", "attacks=['none']", "algorithms=['pdmm']", "local.steps=2"]
    for item in overrides:
        command += ["--set", item]
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = read_metrics(out / "metrics.csv")
    assert rows[-1]["round"] == 1
    _, reference = engine.run(config_module.load(None, [*overrides, "data.num_clients=2"]))
    assert_rows_match([r for o in reference for r in o.rows], rows, FLOAT_TOLERANCE)
    deadline = time.monotonic() + 10
    while _started_under(temporary) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _started_under(temporary), "processes left running"
    assert not list(temporary.iterdir()), "the launcher's working folder was not removed"


def test_a_failing_superlink_keeps_the_logs_and_quotes_them(monkeypatch, tmp_path):
    from fedpdmm.errors import FedpdmmError
    from fedpdmm.flower import launcher

    fake = tmp_path / "flower-superlink"
    fake.write_text("#!/bin/sh\necho 'starting'\necho 'error: cannot bind 127.0.0.1' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(launcher, "flower_tool", lambda name: str(fake))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(FedpdmmError) as failure, LocalFederation(1):
        pass
    message = str(failure.value)
    assert "exited with code 3" in message and "cannot bind 127.0.0.1" in message
    assert len(message.splitlines()) == 1
    kept = [path for path in tmp_path.iterdir() if path.name.startswith("fedpdmm-flower-")]
    assert len(kept) == 1 and str(kept[0]) in message
    assert "cannot bind" in (kept[0] / "superlink.log").read_text()


@pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX")
def test_unregistered_and_untrusting_supernodes_are_kept_out_of_a_secure_federation(tmp_path):
    from fedpdmm.flower.credentials import write_node_key

    config = config_module.validate(
        {
            **DEPLOY,
            "rounds": 2,
            "attacks": ["none"],
            "algorithms": ["pdmm"],
            "data": {"name": "digits", "num_clients": 4},
        }
    )
    federation = LocalFederation(2, tmp_path / "federation", secure=True)
    try:
        federation.start()
        impostor = federation.start_node(
            2, key=write_node_key(tmp_path / "unregistered"), name="impostor"
        )
        registered = write_node_key(tmp_path / "registered")  # a valid key, but no CA
        federation.register(registered.with_name("registered.pub"))
        federation.start_node(3, key=registered, root_certificates=False, name="no-ca")
        out = federation.run(
            config, tmp_path / "run", round_timeout=60, discovery_timeout=12, timeout=400
        )
        assert impostor.wait(timeout=60) != 0
        impostor_log = (federation.workdir / "impostor.log").read_text(errors="replace")
        no_ca_log = (federation.workdir / "no-ca.log").read_text(errors="replace")
        run_log = federation.run_log.read_text(errors="replace")
    finally:
        federation.stop()
    assert "Failed to activate SuperNode" in impostor_log
    assert "CERTIFICATE_VERIFY_FAILED" in no_ca_log and "SuperNode ID" not in no_ca_log
    assert "no SuperNode serves partition(s) [2, 3]" in run_log
    rows = read_metrics(out / "metrics.csv")
    assert rows[-1]["round"] == 2
    assert all(row["active_clients"] == 2 for row in rows if row["round"] > 0)
    assert rows[-1]["missing_replies"] == 2 * 2  # two partitions, two rounds
