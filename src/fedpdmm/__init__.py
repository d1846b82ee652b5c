"""fedpdmm: Byzantine-resilient federated learning via distributed optimization."""

__version__ = "0.1.0"
