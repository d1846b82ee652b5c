"""Reports as documents: blocks rendered to Markdown and self-contained HTML, and `write_report`."""

from __future__ import annotations

import base64
import html
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedpdmm.errors import FedpdmmError
from fedpdmm.report.plots import plot_breakdown, plot_curves, plot_heatmap
from fedpdmm.report.tables import accuracy_table, cells, setting_axes, worst_case_table, worst_cases
from fedpdmm.store import Results, load_results


@dataclass
class Document:
    """Blocks rendered to Markdown and HTML alike: ("h", text, level), ("p", text),
    ("table", header, rows), ("img", path, caption)."""

    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("h", text, level))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        self.blocks.append(("table", list(header), [list(map(str, row)) for row in rows]))

    def image(self, path: Path, caption: str) -> None:
        self.blocks.append(("img", path, caption))


def to_markdown(document: Document, base: Path | None = None) -> str:
    """Markdown text; images linked relative to `base` (default: by file name)."""
    lines = [f"# {document.title}", ""]
    for block in document.blocks:
        if block[0] == "h":
            lines += ["#" * block[2] + " " + block[1], ""]
        elif block[0] == "p":
            lines += [block[1], ""]
        elif block[0] == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += [
                "| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows
            ]
            lines.append("")
        else:
            link = block[1].relative_to(base).as_posix() if base else block[1].name
            lines += [f"![{block[2]}]({link})", ""]
    return "\n".join(lines)


def to_html(document: Document) -> str:
    """A self-contained page: the same blocks, PNGs embedded as base64 data URIs."""
    esc = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(document.title)}</title><style>body{{font-family:sans-serif;max-width:"
        "1100px;margin:auto}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:3px 6px;font-size:13px}img{max-width:100%}</style></head><body>",
        f"<h1>{esc(document.title)}</h1>",
    ]
    for block in document.blocks:
        if block[0] == "h":
            parts.append(f"<h{block[2]}>{esc(block[1])}</h{block[2]}>")
        elif block[0] == "p":
            parts.append(f"<p>{esc(block[1])}</p>")
        elif block[0] == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block[2]
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        else:
            data = base64.b64encode(block[1].read_bytes()).decode()
            parts.append(
                f"<figure><img src='data:image/png;base64,{data}' alt='{esc(block[2])}'>"
                f"<figcaption>{esc(block[2])}</figcaption></figure>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)


def sweep_sections(document: Document, results: Results, images: Path, level: int = 2) -> None:
    """Append the tables and plots of `results` to `document`, drawing the PNGs into `images`;
    section headings at `level`."""
    found = cells(results)
    if not found:
        document.paragraph("No finished runs yet.")
        return
    settings = setting_axes(results.axes)
    document.heading("Final and best test accuracy of the global model", level)
    document.paragraph(
        "Mean ± sample standard deviation (n - 1) over seeds; final = last evaluated round "
        "(a diverged run stops there), best = highest evaluated accuracy; a NaN accuracy counts "
        "as 0; diverged = seeds whose last test loss is not finite."
    )
    document.table(*accuracy_table(found, settings))
    worst = worst_cases(found)
    document.heading("Worst case over attacks and targets", level)
    if worst:
        document.paragraph(
            "For each method and Byzantine count, the attack and target with the lowest mean "
            "final accuracy: the number a defender can rely on within this grid."
        )
        document.table(*worst_case_table(worst))
    else:
        document.paragraph("Skipped: the grid has no attacked runs.")
    document.heading("Plots", level)
    for path in plot_curves(found, images):
        document.image(path, "test accuracy against round (band: ± one std over seeds)")
    breakdown = plot_breakdown(found, images)
    if breakdown is None:
        document.paragraph(
            "Breakdown curve skipped: the attacked runs have a single Byzantine count; add "
            "`--grid attack.fraction=0,0.25,0.5` to draw it."
        )
    else:
        document.image(breakdown, "final accuracy against the fraction of Byzantine clients")
    heatmap = plot_heatmap(found, results.axes, images)
    if heatmap is None:
        document.paragraph(
            "Heatmap skipped: it needs attacked runs and a heterogeneity axis in the grid "
            "(`--grid data.alpha=0.1,1,10` or `--grid data.partition=iid,dirichlet`)."
        )
    else:
        document.image(heatmap, "worst-case final accuracy over Byzantine count x heterogeneity")


def write_document(document: Document, out: Path, staging: Path) -> Path:
    """Write report.md and report.html into `staging`, then move `staging` to `out` (replacing)."""
    (staging / "report.md").write_text(to_markdown(document, staging))
    (staging / "report.html").write_text(to_html(document))
    if out.exists():
        shutil.rmtree(out)
    os.replace(staging, out)
    return out


def staging_for(out: Path) -> Path:
    """A fresh temporary directory beside `out` (one-line error if it cannot be made)."""
    try:
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.absolute().parent))
        staging.chmod(0o755)
        return staging
    except OSError as error:
        raise FedpdmmError(f"cannot create report directory {out}: {error.strerror}") from None


def write_report(source: Path, out: Path | None = None, title: str | None = None) -> Path:
    """Read the results under `source` and write `report.md`, `report.html` and the PNGs to `out`
    (default `source/report`); returns `out`. Nothing is retrained."""
    source = Path(source)
    out = Path(out) if out is not None else source / "report"
    results = load_results(source)
    document = Document(title or f"fedpdmm report: {source.name}")
    document.paragraph(
        f"Source: {source} ({len({r['run'] for r in results.rows})} finished runs; "
        f"grid axes: {', '.join(results.axes) or 'none'})."
    )
    staging = staging_for(out)
    try:
        sweep_sections(document, results, staging)
        return write_document(document, out, staging)
    except OSError as error:
        raise FedpdmmError(f"cannot write the report to {out}: {error.strerror}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
