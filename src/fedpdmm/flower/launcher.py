"""A local federation for trying the app out: one SuperLink and N SuperNodes on 127.0.0.1.

    with LocalFederation(nodes=4, workdir=tmp) as federation:   # starts the processes
        federation.run(config, out=Path("runs/x"))              # flwr run ... --stream
    # every process started here (and every child they spawned) is stopped on exit

Everything runs on free loopback ports, in insecure mode or (`secure=True`) with TLS and
SuperNode authentication on throw-away credentials, with a private FLWR_HOME, telemetry and
update checks off and runtime dependency installation disabled (the app runs in this Python
environment, whose scripts folder is put first on every process's PATH, so the launcher works
from an absolute path with no environment activated). When something fails, the working folder
with every process's log is kept and the one-line error quotes the failing log's last lines.
SuperNodes start `flwr-clientapp` children that outlive them when they are stopped, so each
process is started in its own process group and the whole group is killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedpdmm.config import Config
from fedpdmm.errors import ConfigError, FedpdmmError
from fedpdmm.flower.credentials import Credentials, make_credentials
from fedpdmm.flower.settings import check_deployable, run_config_for
from fedpdmm.interrupts import sigterm_as_interrupt
from fedpdmm.setup import build_setup

FEDERATION = "local-deploy"
APP_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedpdmm-flower"
version = "1.0.0"
description = "fedpdmm's PDMM, FedAvg and attacks as a Flower app"
license = "MIT"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedpdmm"

[tool.flwr.app.components]
serverapp = "fedpdmm.flower.server_app:app"
clientapp = "fedpdmm.flower.client_app:app"

[tool.flwr.app.config]
fedpdmm-config = ""
out-dir = ""
data-dir = ""
round-timeout = 60.0
discovery-timeout = 120.0
byzantine-partitions = ""
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_app(folder: Path) -> Path:
    """The Flower app directory `flwr run` bundles: a pyproject.toml naming fedpdmm's apps."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pyproject.toml").write_text(APP_PYPROJECT)
    (folder / "fedpdmm_flower_app.py").write_text('"""fedpdmm.flower.server_app / client_app."""\n')
    return folder


def scripts_dir() -> Path:
    """The folder of this Python's console scripts (a virtual environment's `bin`)."""
    return Path(sys.executable).parent


def flower_environment(home: Path) -> dict[str, str]:
    """The environment of every process the launcher starts: this Python's scripts first on
    PATH (the SuperLink starts `flower-superexec` and SuperNodes `flwr-clientapp` by name, so
    they must resolve to this installation even when it is not activated), a private FLWR_HOME,
    telemetry and update checks off."""
    env = dict(os.environ)
    path = [str(scripts_dir()), *(p for p in env.get("PATH", "").split(os.pathsep) if p)]
    env.update(
        PATH=os.pathsep.join(dict.fromkeys(path)),
        FLWR_HOME=str(home),
        FLWR_TELEMETRY_ENABLED="0",
        FLWR_DISABLE_UPDATE_CHECK="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    return env


def flower_tool(name: str) -> str:
    """The path of a Flower console script installed beside this Python."""
    candidate = scripts_dir() / name
    return str(candidate) if candidate.exists() else name


def log_tail(path: Path, lines: int = 3) -> str:
    """The last non-blank `lines` of a log, joined by " | " (box-drawing frames stripped)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    kept = [line.strip(" │╭╰─┃┏┗━") for line in text.splitlines()]
    kept = [line for line in kept if line]
    return " | ".join(kept[-lines:]) if kept else "(empty log)"


class LocalFederation:
    """A SuperLink and `nodes` SuperNodes on 127.0.0.1; a context manager that stops them all.

    `warm` (the default): each SuperNode runs its ClientApp tasks in processes forked from a
    SuperExec that imported torch and fedpdmm once, and polls with short waits
    (`fedpdmm.flower.warm`); False: Flower's own `flower-supernode`, which starts a fresh
    `flwr-clientapp` process for every message. `secure`: TLS and SuperNode authentication."""

    def __init__(
        self,
        nodes: int,
        workdir: Path | None = None,
        byzantine: frozenset[int] = frozenset(),
        data_dir: str | None = None,
        simulation: bool = False,
        secure: bool = False,
        warm: bool = True,
    ) -> None:
        if nodes < 1:
            raise FedpdmmError(f"--nodes must be at least 1, got {nodes}")
        self.nodes = nodes
        self.byzantine = byzantine
        self.data_dir = data_dir
        self._tempdir = None if workdir else tempfile.TemporaryDirectory(prefix="fedpdmm-flower-")
        self.workdir = Path(workdir or self._tempdir.name).absolute()
        self.home = self.workdir / "flwr-home"
        self.env = flower_environment(self.home)
        self.port = free_port()
        self.simulation = simulation
        self.secure = secure and not simulation
        self.warm = warm
        self.credentials: Credentials | None = None
        self.processes: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.processes[name] = process
        return process

    def start(self) -> LocalFederation:
        self.home.mkdir(parents=True, exist_ok=True)
        if self.secure:
            self.credentials = make_credentials(self.workdir / "credentials", self.nodes)
            security = f'root-certificates = "{self.credentials.ca_certificate}"\n'
            link_security = [
                "--ssl-ca-certfile",
                str(self.credentials.ca_certificate),
                "--ssl-certfile",
                str(self.credentials.server_certificate),
                "--ssl-keyfile",
                str(self.credentials.server_key),
                "--enable-supernode-auth",
            ]
        else:
            security, link_security = "insecure = true\n", ["--insecure"]
        (self.home / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n[superlink.{FEDERATION}]\n'
            f'address = "127.0.0.1:{self.port}"\n{security}'
        )
        self._start(
            "superlink",
            [
                flower_tool("flower-superlink"),
                *link_security,
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--disable-runtime-dependency-installation",
                *(["--simulation", "--isolation", "subprocess"] if self.simulation else []),
            ],
        )
        self.wait_for_port(self.port, 60)
        if self.credentials is not None:
            for partition in range(self.nodes):
                self.register(self.credentials.public_key(partition))
        if not self.simulation:
            for partition in range(self.nodes):
                self.start_node(partition)
        return self

    def register(self, public_key: Path) -> None:
        """Register a SuperNode's public key with the SuperLink (`flwr supernode register`)."""
        command = [flower_tool("flwr"), "supernode", "register", str(public_key), FEDERATION]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        log = self.workdir / "register.log"
        with log.open("a") as handle:
            handle.write(done.stdout + done.stderr)
        if done.returncode != 0:
            raise FedpdmmError(
                f"flwr supernode register {public_key.name} failed (exit {done.returncode}): "
                f"{log_tail(log)} (logs kept in {self.workdir})"
            )

    def node_config(self, partition: int) -> str:
        role = "true" if partition in self.byzantine else "false"
        config = f"partition-id={partition} byzantine={role}"
        if self.data_dir:
            config += f' data-dir="{Path(self.data_dir).absolute()}"'
        return config

    def start_node(
        self,
        partition: int,
        *,
        key: Path | None = None,
        root_certificates: bool = True,
        name: str | None = None,
    ) -> subprocess.Popen:
        """Start (or restart) the SuperNode serving `partition`.

        In a secure federation it authenticates with its registered key (or `key`) and trusts
        the federation's CA (unless `root_certificates` is False: then it checks the SuperLink
        against the system's CAs, and fails). `name` names its log (default
        `supernode-<partition>`)."""
        if self.credentials is None:
            security = ["--insecure"]
        else:
            key = key or self.credentials.node_keys[partition]
            security = ["--auth-supernode-private-key", str(key)]
            if root_certificates:
                security += ["--root-certificates", str(self.credentials.ca_certificate)]
        name = name or f"supernode-{partition}"
        runtime_port = free_port()
        arguments = [
            *security,
            "--superlink",
            f"127.0.0.1:{self.port}",
            "--host",
            "127.0.0.1",
            "--port",
            str(runtime_port),
            "--node-config",
            self.node_config(partition),
        ]
        if not self.warm:
            return self._start(name, [flower_tool("flower-supernode"), *arguments])
        warm = [sys.executable, "-m", "fedpdmm.flower.warm"]
        node = self._start(name, [*warm, "supernode", *arguments, "--isolation", "process"])
        self._start(
            f"{name}-superexec",
            [
                *warm,
                "superexec",
                "--insecure",
                "--runtime-api-address",
                f"127.0.0.1:{runtime_port}",
                "--parent-pid",
                str(node.pid),
            ],
        )
        return node

    def kill_node(self, partition: int) -> None:
        """SIGKILL the SuperNode of `partition` and its children (a crash, not a shutdown)."""
        _kill_group(self.processes.pop(f"supernode-{partition}"), signal.SIGKILL)
        if f"supernode-{partition}-superexec" in self.processes:
            _kill_group(self.processes.pop(f"supernode-{partition}-superexec"), signal.SIGKILL)

    def wait_for_port(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            superlink = self.processes["superlink"]
            if superlink.poll() is not None:
                log = self.workdir / "superlink.log"
                raise FedpdmmError(
                    f"flower-superlink exited with code {superlink.returncode}: "
                    f"{log_tail(log)} (logs kept in {self.workdir})"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                return
            time.sleep(0.1)
        raise FedpdmmError(
            f"flower-superlink did not open port {port} within {timeout:g} s: "
            f"{log_tail(self.workdir / 'superlink.log')} (logs kept in {self.workdir})"
        )

    def start_run(
        self,
        config: Config,
        out: Path,
        *,
        round_timeout: float = 60.0,
        discovery_timeout: float = 120.0,
    ) -> subprocess.Popen:
        """Start `flwr run` of the app on this federation (the ServerApp writes `out`)."""
        check_deployable(config)
        run_config = run_config_for(
            config,
            out_dir=Path(out),
            data_dir=self.data_dir,
            round_timeout=round_timeout,
            discovery_timeout=discovery_timeout,
        )
        if self.simulation and self.byzantine:
            run_config["byzantine-partitions"] = ",".join(map(str, sorted(self.byzantine)))
        run_toml = self.workdir / "run-config.toml"
        run_toml.write_text("".join(f"{k} = {_toml_string(v)}\n" for k, v in run_config.items()))
        app = write_app(self.workdir / "app")
        command = [
            flower_tool("flwr"),
            "run",
            str(app),
            FEDERATION,
            "--run-config",
            str(run_toml),
            "--stream",
            *(["--federation-config", f"num-supernodes={self.nodes}"] if self.simulation else []),
        ]
        with self.run_log.open("wb") as log:
            process = subprocess.Popen(
                command,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[f"flwr-run-{len(self.processes)}"] = process
        return process

    @property
    def run_log(self) -> Path:
        return self.workdir / "flwr-run.log"

    def finish_run(
        self, process: subprocess.Popen, out: Path, timeout: float | None = None
    ) -> Path:
        """Wait for a started run; the run directory, or an error quoting `flwr run`'s output."""
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FedpdmmError(
                f"the Flower run did not finish within {timeout:g} s: {log_tail(self.run_log)} "
                f"(logs kept in {self.workdir})"
            ) from None
        if not (Path(out) / "metrics.csv").exists():
            raise FedpdmmError(
                f"the Flower run wrote no results to {out}; flwr run said: "
                f"{log_tail(self.run_log, 6)} (logs kept in {self.workdir})"
            )
        return Path(out)

    def run(self, config: Config, out: Path, *, timeout: float | None = None, **options) -> Path:
        """`flwr run` the app on this federation and wait; returns the run directory `out`."""
        return self.finish_run(self.start_run(config, out, **options), out, timeout)

    def stop(self, keep_logs: bool = False) -> None:
        """Stop every process started here and their process groups (children included).

        The working folder (every process's log) is removed if the launcher made it, unless
        `keep_logs`: after a failure it stays, and the error names it."""
        for process in reversed(list(self.processes.values())):
            _kill_group(process, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                _kill_group(process, signal.SIGKILL)
                process.wait(timeout=10)
            _kill_group(process, signal.SIGKILL)  # children that outlived their parent
        self.processes.clear()
        if self._tempdir is not None and not keep_logs:
            self._tempdir.cleanup()

    def __enter__(self) -> LocalFederation:
        try:
            return self.start()
        except BaseException as error:
            self.stop(keep_logs=not isinstance(error, KeyboardInterrupt))
            raise

    def __exit__(self, exc_type, exc, traceback) -> None:
        failed = exc_type is not None and not issubclass(exc_type, KeyboardInterrupt)
        self.stop(keep_logs=failed)


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _toml_string(value) -> str:
    if isinstance(value, str):
        return "'''\n" + value + "'''" if "\n" in value else '"' + value.replace('"', '\\"') + '"'
    return repr(value)


def run_local(
    config: Config,
    out: Path,
    nodes: int,
    *,
    data_dir: str | None = None,
    round_timeout: float = 60.0,
    workdir: Path | None = None,
    simulation: bool = False,
    secure: bool = False,
) -> Path:
    """`fedpdmm flower local`: a local federation of `nodes` SuperNodes runs `config` once.

    The Byzantine partitions are the engine's for this config and seed, so the numbers are those
    of `fedpdmm run`. `simulation=True` runs the same app on Flower's simulation engine (Ray)
    with `nodes` virtual SuperNodes instead of SuperNode processes. `secure=True` runs the
    federation with TLS and SuperNode authentication on throw-away credentials
    (`fedpdmm.flower.credentials`).
    """
    check_deployable(config)
    if config.data.num_clients != nodes:
        raise ConfigError(
            f"--nodes {nodes} differs from data.num_clients={config.data.num_clients}: one "
            "SuperNode serves one partition; make them equal"
        )
    byzantine = build_setup(config, data_dir).network.byzantine
    roles = frozenset(byzantine.nonzero().flatten().tolist())
    with (
        sigterm_as_interrupt(),
        LocalFederation(nodes, workdir, roles, data_dir, simulation, secure) as fed,
    ):
        return fed.run(config, out, round_timeout=round_timeout)
