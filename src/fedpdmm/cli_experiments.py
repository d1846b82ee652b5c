"""The `sweep`, `report` and `reproduce` commands (registered on `fedpdmm.cli.app`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from fedpdmm import config as config_module
from fedpdmm import interrupts
from fedpdmm.errors import FedpdmmError
from fedpdmm.progress_lines import LineProgress, eta_text

console = Console(stderr=True)

Workers = Annotated[
    int | None, typer.Option(min=1, help="Worker processes (default: one per core).")
]
DataDir = Annotated[
    str | None, typer.Option(help="Folder holding the datasets (overrides FEDPDMM_DATA).")
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress display.")]


def _named_directory(out: Path, option: str = "--out") -> Path:
    """`out` unless it names no directory of its own (empty, `.`, `..`): a one-line error."""
    if out.name in ("", ".", ".."):
        raise FedpdmmError(
            f"{option} {str(out)!r} names no directory of its own (an empty value, '.' or '..'); "
            f"give a folder name, e.g. {option} runs/sweep"
        )
    return out


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA -"
    return eta_text(seconds)


def _progress(quiet: bool) -> Progress | LineProgress:
    if not quiet and not console.is_terminal:
        return LineProgress(console)
    return Progress(
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn(
            "{task.fields[unit]}  running {task.fields[running]}  failed {task.fields[failed]}"
        ),
        TextColumn("{task.fields[eta]}"),
        console=console,
        disable=quiet,
    )


class _Display:
    """Feeds `sweep.SweepStatus` (and `sweep.pool.PoolStatus`) updates to one rich task per
    name."""

    def __init__(self, progress: Progress | LineProgress) -> None:
        self.progress = progress
        self.tasks: dict[str, int] = {}

    def __call__(self, name: str, status) -> None:
        if name not in self.tasks:
            unit = getattr(status, "unit", "runs")
            self.tasks[name] = self.progress.add_task(
                name, total=status.total, running=0, failed=0, eta=_eta(None), unit=unit
            )
        self.progress.update(
            self.tasks[name],
            completed=status.done + status.failed,
            running=status.running,
            failed=status.failed,
            eta=_eta(status.eta_s) if status.running else "",
        )


def _print_failures(failed: dict[str, str]) -> None:
    for name, error in failed.items():
        console.print(f"[red]failed[/red] {name}: {error}", highlight=False)


def sweep(
    config_path: Annotated[
        Path, typer.Argument(metavar="CONFIG", help="Base config: a TOML file or a preset name.")
    ],
    out: Annotated[Path, typer.Option(help="Sweep directory (rerun the same command to resume).")],
    grid: Annotated[
        list[str] | None,
        typer.Option(help="An axis: --grid local.lr=0.01,0.05 (TOML values; repeat for more)."),
    ] = None,
    seeds: Annotated[
        int | None, typer.Option(min=1, help="Add a seed axis: config seed + 0 .. N-1.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a base config key: --set rounds=20."),
    ] = None,
    workers: Workers = None,
    data_dir: DataDir = None,
    quiet: Quiet = False,
    recompute: Annotated[
        bool,
        typer.Option(
            help="Compute every combination of every run, even one another run already computed "
            "(default: computed once, in <out>/.combinations)."
        ),
    ] = False,
) -> None:
    """Run the cartesian product of the grid axes, one run directory per point; resumable."""
    from fedpdmm import sweep as sweep_module

    out = _named_directory(out)
    base = config_module.load(config_path, set_ or [])
    plan = sweep_module.plan(base, sweep_module.parse_grid(grid or []), seeds)
    with interrupts.sigterm_as_interrupt(), _progress(quiet) as progress:
        display = _Display(progress)
        outcome = sweep_module.run_sweep(
            plan,
            out,
            workers=workers,
            data_dir=data_dir,
            progress=lambda status: display(out.name, status),
            reuse=not recompute,
            pool_progress=lambda status: display(f"{out.name} combinations", status),
        )
    _print_failures(outcome.failed)
    console.print(
        f"{len(outcome.finished)} runs finished, {len(outcome.skipped)} already done, "
        f"{len(outcome.failed)} failed; index in {out / sweep_module.INDEX_FILE}"
        + (" (rerun the same command to retry the failed runs)" if outcome.failed else "")
    )


def report(
    source: Annotated[Path, typer.Argument(metavar="DIR", help="A sweep or run directory.")],
    out: Annotated[
        Path | None, typer.Option(help="Report directory (default: DIR/report).")
    ] = None,
) -> None:
    """Tables and plots from saved results (nothing is retrained): report.md and report.html."""
    from fedpdmm import report as report_module

    written = report_module.write_report(source, out)
    console.print(f"report in {written}/ (report.md, report.html, PNGs)")


class Reproduction(StrEnum):
    paper = "paper"
    robust = "robust"
    network = "network"
    peers = "peers"


def reproduce(
    which: Annotated[Reproduction, typer.Argument(help="paper | robust | network | peers")],
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer rounds and seeds (minutes, not hours).")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: runs/reproduce-<which>).")
    ] = None,
    only: Annotated[
        list[str] | None,
        typer.Option(help="Run only this experiment of the grid (repeat for more)."),
    ] = None,
    workers: Workers = None,
    data_dir: DataDir = None,
    quiet: Quiet = False,
) -> None:
    """Run the paper's experiment grid (or the robust comparison, the unreliable-network sweep,
    or the peers' own experiments beside their published numbers) and write its report."""
    from fedpdmm import reproduce as reproduce_module

    name = which.value
    default = Path("runs") / f"reproduce-{name}{'-quick' if quick else ''}"
    out = default if out is None else _named_directory(out)
    if name == "paper":
        experiments = reproduce_module.paper_experiments(quick)
    elif name == "network":
        experiments = reproduce_module.network_experiments(quick)
    elif name == "peers":
        experiments = reproduce_module.peers_experiments(quick)
    else:
        experiments = reproduce_module.robust_experiments(quick)
    experiments = reproduce_module.select(experiments, only or [])
    with interrupts.sigterm_as_interrupt(), _progress(quiet) as progress:
        outcomes = reproduce_module.run_experiments(
            experiments, out, workers=workers, data_dir=data_dir, progress=_Display(progress)
        )
    for outcome in outcomes.values():
        _print_failures(outcome.failed)
    if name == "paper":
        written, claims = reproduce_module.write_paper_report(experiments, out, quick=quick)
        _print_claims(claims)
    elif name == "network":
        written, tables = reproduce_module.write_network_report(experiments, out)
        _print_network(tables)
    elif name == "peers":
        written, tables = reproduce_module.write_peers_report(experiments, out)
        _print_tables(tables, reproduce_module.SIDE_HEADER)
    else:
        written = reproduce_module.write_robust_report(experiments, out)
    failed = sum(len(o.failed) for o in outcomes.values())
    if failed:
        console.print(f"{failed} runs failed; rerun the same command to retry them")
    console.print(f"report in {written}/ (report.md, report.html)")


def _print_claims(rows: list[list[str]]) -> None:
    if len(rows) < 2:
        raise FedpdmmError("no claim could be measured: the claims sweeps have no finished runs")
    table = Table(title="paper claims beside fedpdmm's measurements")
    for column in rows[0]:
        table.add_column(column)
    for row in rows[1:]:
        table.add_row(*row)
    Console().print(table)


def _print_network(tables: list[tuple[str, list[list[str]]]]) -> None:
    from fedpdmm.reproduce.network import SUMMARY_HEADER

    _print_tables(tables, SUMMARY_HEADER)


def _print_tables(tables: list[tuple[str, list[list[str]]]], header) -> None:
    for title, rows in tables:
        table = Table(title=title)
        for column in header:
            table.add_column(column)
        for row in rows:
            table.add_row(*row)
        Console().print(table)


def register(app: typer.Typer) -> None:
    """Add `sweep`, `report` and `reproduce` to the `fedpdmm` app."""
    app.command()(sweep)
    app.command()(report)
    app.command()(reproduce)
