"""fedpdmm's algorithms as a Flower app: the engine's steps over SuperLink and SuperNodes.

    settings.py    fedpdmm config <-> Flower run config and node config
    client.py      a node's round: the engine's client steps on its own row (no Flower import)
    server.py      the server's rounds over a `Transport`: faults, dropped edges, metric rows
    loopback.py    the same protocol in one process (tests, fault injection)
    records.py     requests and replies as Flower records
    server_app.py  the ServerApp (`fedpdmm.flower.server_app:app`) over Flower's Grid
    client_app.py  the ClientApp (`fedpdmm.flower.client_app:app`)
    launcher.py    a local federation: SuperLink + N SuperNodes on 127.0.0.1, or the simulation
    cli.py         `fedpdmm flower local`

Needs the `flower` extra (`pip install "fedpdmm[flower]"`) for everything that imports `flwr`.
See docs/flower.md.
"""
