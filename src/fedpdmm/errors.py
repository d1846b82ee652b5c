"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class FedpdmmError(Exception):
    """An error caused by the user's input (config, data, arguments); never a bug."""


class ConfigError(FedpdmmError):
    """A config key, value or combination of values is invalid."""


class DataError(FedpdmmError):
    """A dataset is missing, truncated, corrupt or cannot be partitioned as asked."""


class NonFiniteError(FedpdmmError):
    """Training produced NaN or Inf where a finite value is required."""
