"""The reproductions' reports: the claims table first, then every experiment's sections."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from fedpdmm import report, store
from fedpdmm.errors import FedpdmmError
from fedpdmm.reproduce.claims import claims_document
from fedpdmm.reproduce.grids import Experiment


def write_paper_report(
    experiments: Sequence[Experiment],
    out: Path,
    preset_dir: Path | None = None,
    quick: bool = False,
) -> tuple[Path, list[list[str]]]:
    """`out/report/`: the claims, then every experiment's tables and plots; also `claims.csv`."""
    document, claims = claims_document(experiments, out, preset_dir, quick)
    text = "".join(",".join(f'"{cell}"' for cell in row) + "\n" for row in claims)
    return write_sections(document, experiments, out, {"claims.csv": text}), claims


def write_robust_report(experiments: Sequence[Experiment], out: Path) -> Path:
    document = report.Document("fedpdmm reproduce robust")
    document.paragraph(
        "FedAvg, PDMM, FedProx and SCAFFOLD with a server, plain and with each main robust rule "
        "(`fedavg+median`, `pdmm+median`, ...), under the main attacks (IPM with epsilon 0.5) and "
        "the consensus attacks (dissensus, drift, replay) striking the transmitted message and, "
        "separately, the model of a Byzantine client that follows the protocol; Byzantine "
        "clients keep an honest client's state (`attack.state = honest`); MNIST, MLP, 20 "
        "clients of which 4 Byzantine, IID and Dirichlet (alpha 0.5) data. Then the breakdown "
        "curves: accuracy against the Byzantine fraction for every method."
    )
    return write_sections(document, experiments, out)


def write_sections(
    document: report.Document,
    experiments: Sequence[Experiment],
    out: Path,
    files: dict[str, str] | None = None,
) -> Path:
    target = out / "report"
    staging = report.staging_for(target)
    try:
        for name, text in (files or {}).items():
            (staging / name).write_text(text)
        for experiment in experiments:
            root = out / experiment.name
            if not (root / store.SWEEP_FILE).exists():
                continue
            images = staging / experiment.name
            images.mkdir()
            document.heading(experiment.title)
            document.paragraph(f"Sweep directory: {experiment.name}/ ({experiment.seeds} seeds).")
            report.sweep_sections(document, report.load_results(root), images, level=3)
        return report.write_document(document, target, staging)
    except OSError as error:
        raise FedpdmmError(f"cannot write the report to {target}: {error.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
