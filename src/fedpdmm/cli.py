"""The `fedpdmm` command line: thin wrappers that parse, call the library and print."""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from fedpdmm import config as config_module
from fedpdmm.errors import FedpdmmError
from fedpdmm.progress_lines import LineProgress

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Byzantine-resilient federated learning: PDMM, FedAvg, gossip, robust rules, attacks.",
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


@app.command()
def run(
    config_path: Annotated[
        Path | None,
        typer.Argument(metavar="[CONFIG]", help="Experiment config: a TOML file or a preset name."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: --set local.lr=0.05 (TOML value)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: runs/<date-time>).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Folder holding the datasets (overrides FEDPDMM_DATA).")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display.")] = False,
    threads: Annotated[
        int, typer.Option(min=1, help="Torch threads (1 is fastest for small models).")
    ] = 1,
    device: Annotated[
        str | None,
        typer.Option(help="Where the tensors live: cpu (the default), cuda or cuda:N."),
    ] = None,
) -> None:
    """Train every algorithm x attack of a config on one data split; write metrics, table, plot."""
    import torch

    from fedpdmm import engine, results
    from fedpdmm.experiment import run_experiment

    torch.set_num_threads(threads)
    overrides = [*(set_ or []), *([f"device={json.dumps(device)}"] if device is not None else [])]
    config = config_module.load(config_path, overrides)
    out = out or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    results.check_output_dir(out)
    results.remove_stale_partials(out)
    combos = engine.combinations(config)
    with _progress(quiet) as progress:
        task = progress.add_task("setting up", total=len(combos) * config.rounds)
        done = {"rounds": 0}

        def on_round(label: str, round_index: int, rounds: int) -> None:
            done["rounds"] += 1
            progress.update(task, completed=done["rounds"], description=label)

        written = run_experiment(config, out, data_dir=data_dir, progress=on_round)
        progress.update(task, completed=len(combos) * config.rounds, description="done")
    _print_summary(written.summary)
    console.print(f"results in {out}/ (summary.md, metrics.csv, accuracy.png, config.toml)")


def _progress(quiet: bool) -> Progress | LineProgress:
    if not quiet and not console.is_terminal:
        return LineProgress(console, unit="rounds")
    return Progress(
        TextColumn("{task.description:<36}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rounds"),
        TimeRemainingColumn(),
        console=console,
        disable=quiet,
        transient=True,
    )


def _print_summary(summary: list[dict]) -> None:
    table = Table(title="test accuracy of the global model (%)")
    for column in ("algorithm", "attack", "target", "final", "best", "honest min", "status"):
        table.add_column(column, no_wrap=column in ("algorithm", "attack"))
    for row in summary:
        table.add_row(
            row["algorithm"],
            row["attack"],
            row["target"],
            f"{100 * row['final_accuracy']:.2f}",
            f"{100 * row['best_accuracy']:.2f}",
            f"{100 * row['honest_min']:.2f}",
            row["status"],
        )
    Console().print(table)


@app.command("list")
def list_(
    what: Annotated[
        str,
        typer.Argument(
            help="datasets, models, algorithms, attacks, aggregators, partitions, topologies, "
            "presets, or all"
        ),
    ] = "all",
) -> None:
    """List the names the config accepts."""
    from fedpdmm import aggregators, attacks, data, models, topology
    from fedpdmm.algorithms import ALGORITHMS

    catalogue = {
        "datasets": list(data.DATASETS),
        "models": list(models.MODELS),
        "algorithms": [
            f"{name} ({' and '.join(s for s in ('server', 'graph') if entry.supports(s))})"
            for name, entry in ALGORITHMS.items()
        ],
        "attacks": list(attacks.names()),
        "aggregators": list(aggregators.names()),
        "pre-aggregations": list(aggregators.pre_names()),
        "partitions": list(data.PARTITIONS),
        "topologies": ["server", *topology.names()],
        "presets": list(config_module.presets()),
    }
    if what != "all" and what not in catalogue:
        raise FedpdmmError(f"cannot list {what!r}; choose one of {', '.join(catalogue)}")
    if what == "algorithms":
        for name, entry in ALGORITHMS.items():
            settings = " and ".join(s for s in ("server", "graph") if entry.supports(s))
            print(f"{name} ({settings}): {entry.description}")
        return
    if what == "topologies":
        print("server: a server and n clients (the default; not a graph)")
        for name, defaults, description in topology.describe():
            params = ", ".join(f"{key}={value}" for key, value in defaults.items())
            print(f"{name}: {description}" + (f" [{params}]" if params else ""))
        return
    for name, values in catalogue.items():
        if what in ("all", name):
            print(f"{name}: {', '.join(values)}")


def _register_experiment_commands() -> None:
    from fedpdmm import cli_experiments
    from fedpdmm.flower.cli import flower_app

    cli_experiments.register(app)
    app.add_typer(flower_app, name="flower")


_register_experiment_commands()


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main() -> None:
    """Entry point: run the app, turning user errors into one line on stderr and exit code 2.

    Typer handles its own usage errors (exit 2) and `--help`; any other exception is a bug and
    keeps its traceback.
    """
    warnings.formatwarning = _one_line_warning
    try:
        app()
    except FedpdmmError as error:
        print(f"error: {' '.join(str(error).splitlines())}", file=sys.stderr)
        sys.exit(2)
