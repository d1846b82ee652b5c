"""`fedpdmm reproduce paper | robust | network | peers`: fixed grids, resumable sweeps, reports.

The paper is Xia, Yu, Li, "Byzantine-Resilient Federated Learning via Distributed Optimization",
arXiv 2503.10792 (2025). Its grid is built from the preset configs (`fedpdmm.presets`, mirrored from
the repository's `configs/`): every attack under every target (model, update, message), the
penalty c fixed to the preset's value, plus a c sweep that is shown whole, Byzantine fractions 0 to
75 %, and PDMM against FedAvg without attack on IID data. Each experiment is a sweep directory
under `out`, so an interrupted reproduction resumes where it stopped.
"""

from __future__ import annotations

from fedpdmm.reproduce.claims import (
    RULE,
    claim_rows,
    claims_document,
    convergence_rows,
    paired_gaps,
    verdict,
)
from fedpdmm.reproduce.documents import write_paper_report, write_robust_report
from fedpdmm.reproduce.grids import (
    ATTACK_PARAMS,
    BREAKDOWN_FRACTIONS,
    C_VALUES,
    CLAIMS,
    CONSENSUS_ATTACKS,
    DECENTRALIZED,
    FRACTIONS,
    MAIN_ATTACKS,
    MAIN_RULES,
    STATES,
    Claim,
    Experiment,
    attack_of,
    build_config,
    paper_experiments,
    preset_path,
    robust_experiments,
    run_experiments,
    select,
)
from fedpdmm.reproduce.network import network_experiments, write_network_report
from fedpdmm.reproduce.peers import PUBLISHED, SIDE_HEADER, peers_experiments, write_peers_report

__all__ = [
    "ATTACK_PARAMS",
    "BREAKDOWN_FRACTIONS",
    "CLAIMS",
    "CONSENSUS_ATTACKS",
    "C_VALUES",
    "DECENTRALIZED",
    "FRACTIONS",
    "MAIN_ATTACKS",
    "MAIN_RULES",
    "PUBLISHED",
    "RULE",
    "SIDE_HEADER",
    "STATES",
    "Claim",
    "Experiment",
    "attack_of",
    "build_config",
    "claim_rows",
    "claims_document",
    "convergence_rows",
    "network_experiments",
    "paired_gaps",
    "paper_experiments",
    "peers_experiments",
    "preset_path",
    "robust_experiments",
    "run_experiments",
    "select",
    "verdict",
    "write_network_report",
    "write_paper_report",
    "write_peers_report",
    "write_robust_report",
]
