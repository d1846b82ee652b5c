"""Federated algorithms as explicit state plus small step functions.

Every algorithm splits a round into the pieces a transport would run on different machines:

    server:  downlink(server)                      -> [n, d] personal message for each client
    client:  receive(clients, received)            -> clients, LocalProblem (start, center, rho)
             (the engine runs K local SGD steps on that problem)
             finish(clients, trained)              -> clients
             encode(clients, models)               -> [m, d] what each client transmits
    server:  update(server, messages, accepted)    -> server
             global_model(server)                  -> [d]

Client functions act on any subset of rows (all n clients in the simulator, one row on a real
node), so the same code serves both. Attacks are applied by the caller between `finish` and
`update`, to the model, the update or the message (see `fedpdmm.engine`).
"""

from __future__ import annotations

from fedpdmm.algorithms.common import Algorithm, LocalProblem
from fedpdmm.algorithms.decentralized import DSGD, GraphPDMM
from fedpdmm.algorithms.fedavg import FedAvg
from fedpdmm.algorithms.pdmm_star import PDMMStar

CENTRALIZED = ("fedavg", "pdmm")
DECENTRALIZED = ("pdmm", "dsgd")

__all__ = [
    "CENTRALIZED",
    "DECENTRALIZED",
    "DSGD",
    "Algorithm",
    "FedAvg",
    "GraphPDMM",
    "LocalProblem",
    "PDMMStar",
]
