"""Tables and plots from saved results only: a sweep directory (or one run directory) -> a report.

    report.write_report(Path("sweeps/lr"))  # sweeps/lr/report/: report.md, report.html, *.png

A *cell* is one setting x algorithm x attack x target x Byzantine count; its *members* are the
seeds. The setting is every grid axis except the seed and the axes that become columns of their
own (`algorithms`, `attacks`, `attack.target`, `attack.fraction`, `attack.num_byzantine`).
Per member: final accuracy = test accuracy of the global model at the last evaluated round (a run
that diverged stops there), best = the highest evaluated test accuracy. Per cell: mean and sample
standard deviation (n - 1) over seeds; a NaN accuracy counts as 0 (the model is useless).

`tables` groups rows into cells and builds the tables, `plots` draws the PNGs, `documents` renders
and writes the report; results are read by `fedpdmm.store`, so no training code is imported.
"""

from fedpdmm.report.documents import (
    Document,
    staging_for,
    sweep_sections,
    to_html,
    to_markdown,
    write_document,
    write_report,
)
from fedpdmm.report.plots import (
    HETEROGENEITY_AXES,
    PANELS_PER_FIGURE,
    band,
    heatmap_values,
    heterogeneity_axis,
    plot_breakdown,
    plot_curves,
    plot_heatmap,
)
from fedpdmm.report.tables import (
    OWN_COLUMNS,
    Cell,
    accuracy_of,
    accuracy_table,
    cells,
    mean_std,
    setting_axes,
    worst_case_table,
    worst_cases,
)
from fedpdmm.store import Results, load_results

__all__ = [
    "HETEROGENEITY_AXES",
    "OWN_COLUMNS",
    "PANELS_PER_FIGURE",
    "Cell",
    "Document",
    "Results",
    "accuracy_of",
    "accuracy_table",
    "band",
    "cells",
    "heatmap_values",
    "heterogeneity_axis",
    "load_results",
    "mean_std",
    "plot_breakdown",
    "plot_curves",
    "plot_heatmap",
    "setting_axes",
    "staging_for",
    "sweep_sections",
    "to_html",
    "to_markdown",
    "worst_case_table",
    "worst_cases",
    "write_document",
    "write_report",
]
