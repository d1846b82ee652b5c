"""`fedpdmm flower ...`: run fedpdmm's app on a local Flower federation (needs the `flower` extra).

Register in `fedpdmm.cli` with `app.add_typer(flower_app, name="flower")`; this module imports
Flower only when a command runs, so `fedpdmm` works without the extra.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from fedpdmm.errors import FedpdmmError

flower_app = typer.Typer(
    no_args_is_help=True,
    help="Run PDMM, FedAvg and attacks on Flower's runtime (SuperLink + SuperNodes).",
)


@flower_app.command("local")
def local(
    config_path: Annotated[
        Path | None, typer.Argument(metavar="[CONFIG.toml]", help="Experiment config (TOML).")
    ] = None,
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="SuperNodes (one a partition).")] = 4,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key: --set local.lr=0.05 (TOML value)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output directory (default: runs/flower-<date-time>).")
    ] = None,
    data_dir: Annotated[
        str | None, typer.Option(help="Folder holding the datasets (overrides FEDPDMM_DATA).")
    ] = None,
    round_timeout: Annotated[
        float, typer.Option(min=1.0, help="Seconds the server waits for a round's replies.")
    ] = 60.0,
    simulation: Annotated[
        bool, typer.Option("--simulation", help="Flower's simulation engine (Ray) instead.")
    ] = False,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="TLS and SuperNode authentication with throw-away credentials "
            "(a CA, the SuperLink's certificate, one key pair per SuperNode).",
        ),
    ] = False,
) -> None:
    """Start a SuperLink and N SuperNodes on 127.0.0.1, run the config, write the run directory.

    Writes the same metrics.csv, summary.md and accuracy.png as `fedpdmm run` (plus
    flower_rounds.csv, the per-round timing) and stops every process it started.
    """
    from fedpdmm import config as config_module
    from fedpdmm import results

    try:
        import flwr  # noqa: F401

        from fedpdmm.flower.launcher import run_local
    except ImportError as error:
        raise FedpdmmError(
            f"Flower is not installed ({error.name}); "
            "install it with: pip install 'fedpdmm[flower]'"
        ) from None
    if secure and simulation:
        raise FedpdmmError(
            "--secure secures SuperNode processes, and --simulation runs none; drop one of them"
        )
    overrides = [*(set_ or [])]
    if not any(item.strip().startswith("data.num_clients") for item in overrides):
        overrides.append(f"data.num_clients={nodes}")
    config = config_module.load(config_path, overrides)
    out = (out or Path("runs") / time.strftime("flower-%Y%m%d-%H%M%S")).absolute()
    results.check_output_dir(out)
    typer.echo(f"starting a SuperLink and {nodes} SuperNodes on 127.0.0.1 ...", err=True)
    run_local(
        config,
        out,
        nodes,
        data_dir=data_dir,
        round_timeout=round_timeout,
        simulation=simulation,
        secure=secure,
    )
    typer.echo(f"results in {out}/ (summary.md, metrics.csv, accuracy.png, flower_rounds.csv)")
