"""A warm SuperExec for a SuperNode: torch and fedpdmm are imported once per node, not per message.

A SuperNode started with `--isolation subprocess` starts Flower's `flower-superexec`, which
launches a fresh `flwr-clientapp` process for every message it is sent; each imports Python,
torch and fedpdmm again (seconds per message). `fedpdmm.flower.launcher` instead starts its
SuperNodes with `--isolation process` and, beside each, this SuperExec: it imports torch and the
fedpdmm ClientApp once, then runs Flower's own SuperExec loop (`run_superexec`) with one change,
the executor: a ClientApp task is started by forking this warm process, and the child runs
Flower's `run_clientapp` with the task's token exactly as `flwr-clientapp` would, then exits.
Every other task type is started as Flower starts it. Each task still runs in its own process,
so a ClientApp that crashes takes only its task down; what differs is that the process starts
with the imports done.

It also shortens the polling that sets a round's latency on one machine: the SuperExec asks its
SuperNode for tasks every `POLL_SECONDS` (Flower's default is 1 s, set through
`FLWR_SUPEREXEC_TASK_POLL_INTERVAL`).

It also shortens the SuperNode's own idle waits (3 s between polls of the SuperLink):
`python -m fedpdmm.flower.warm supernode ARGS` is `flower-supernode ARGS` with them cut to
`NODE_POLL_SECONDS`. The SuperExec is `python -m fedpdmm.flower.warm superexec
--runtime-api-address HOST:PORT [--insecure | --root-certificates CA] [--parent-pid PID]`.
Both use Flower internals of the pinned version (`flwr==1.42.0`); the launcher's tests run
them.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

POLL_SECONDS = 0.05
POLL_VARIABLE = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"


def _child(spec) -> int:
    """In the forked child: run the ClientApp task of `spec` as `flwr-clientapp` would."""
    from flwr.supercore.tls import validate_and_resolve_root_certificates
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    try:
        run_clientapp(
            runtime_api_address=spec.runtime_api_address,
            token=spec.token,
            insecure=spec.insecure,
            certificates=validate_and_resolve_root_certificates(
                spec.root_certificates_path, spec.insecure
            ),
            parent_pid=spec.parent_pid,
            runtime_dependency_install=spec.runtime_dependency_install,
        )
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # the task fails, the warm process goes on
        traceback.print_exc()
        return 1
    return 0


def fork_executor():
    """Flower's subprocess executor, starting ClientApp tasks by forking this process."""
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import LaunchResult
    from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

    class ForkExecutor(SubprocessExecutor):
        def __init__(self) -> None:
            self.children: set[int] = set()

        def launch(self, spec):
            if spec.task_type != TaskType.CLIENT_APP:
                return super().launch(spec)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:  # the child never returns into the SuperExec loop
                code = 1
                try:
                    code = _child(spec)
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            self.children.add(pid)
            return LaunchResult.accepted()

        def reconcile(self) -> None:
            """Reap the children that have finished."""
            for pid in list(self.children):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    done = pid
                if done:
                    self.children.discard(pid)

    return ForkExecutor()


def superexec(argv: list[str]) -> None:
    """The warm SuperExec (see the module docstring)."""
    import importlib

    parser = argparse.ArgumentParser(prog="python -m fedpdmm.flower.warm superexec")
    parser.add_argument("--runtime-api-address", required=True)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault(POLL_VARIABLE, str(POLL_SECONDS))
    import torch

    torch.set_num_threads(1)
    import fedpdmm.flower.client_app  # noqa: F401  (imported once, inherited by every task)

    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")
    executor = fork_executor()
    loop.get_executor = lambda *arguments, **options: executor
    loop.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=args.insecure,
        root_certificates_path=args.root_certificates,
        parent_pid=args.parent_pid,
    )


class _ShortSleeps:
    """`time` for Flower's SuperNode loop, with its idle waits (3 s between polls of the
    SuperLink, 0.5 s for a reply) cut to at most `NODE_POLL_SECONDS`."""

    def __getattr__(self, name: str):
        import time

        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        import time

        time.sleep(min(seconds, NODE_POLL_SECONDS))


NODE_POLL_SECONDS = 0.1


def supernode(argv: list[str]) -> None:
    """`flower-supernode` with its polling waits shortened (see `_ShortSleeps`)."""
    import importlib

    loop = importlib.import_module("flwr.supernode.start_client_internal")
    loop.time = _ShortSleeps()
    from flwr.supernode.cli.flower_supernode import flower_supernode

    sys.argv = ["flower-supernode", *argv]
    flower_supernode()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    commands = {"superexec": superexec, "supernode": supernode}
    if not argv or argv[0] not in commands:
        raise SystemExit("usage: python -m fedpdmm.flower.warm {superexec|supernode} ARGS...")
    commands[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
