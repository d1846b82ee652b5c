"""One small registry for every kind of plug-in: rules, pre-aggregations, attacks, algorithms.

    RULES = Registry("aggregation rule", [Mean, Median, ...])
    RULES.build("trimmed_mean", f=2)      # checks the parameters against the dataclass fields
    RULES.names(), "median" in RULES, RULES["median"]

An entry is a class with a `name` class attribute; `build` accepts only parameters that are fields
of the (dataclass) entry and requires every field without a default, so a misspelled key is an
error that lists the valid ones. Aliases map extra names to entries (`bit_flip` -> `sign_flip`).
The shared parameter checks (`need_int`, `need_float`) give every plug-in the same messages.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from fedpdmm.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Name -> entry, read-only after construction; `kind` names the plug-in in messages."""

    def __init__(
        self,
        kind: str,
        entries: Iterable[T],
        aliases: Mapping[str, str] | None = None,
        *,
        label: str = "{kind} {name!r}",
    ) -> None:
        self.kind = kind
        self.label = label  # how an entry is named in parameter errors
        self._entries: dict[str, T] = {}
        for entry in entries:
            name = entry.name  # type: ignore[attr-defined]
            if name in self._entries:
                raise ValueError(f"{kind} {name!r} is registered twice")
            self._entries[name] = entry
        self.aliases = dict(aliases or {})

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self, include_aliases: bool = False) -> list[str]:
        """Registered names in registration order, then the aliases (if asked for)."""
        return [*self._entries, *(self.aliases if include_aliases else ())]

    def resolve(self, name: object) -> str:
        """The canonical name of `name` (an alias resolved); ConfigError if it is unknown."""
        canonical = self.aliases.get(name, name) if isinstance(name, str) else None
        if canonical not in self._entries:
            valid = ", ".join(self.names(include_aliases=True))
            raise ConfigError(f"unknown {self.kind} {name!r}; valid names: {valid}")
        return canonical  # type: ignore[return-value]

    def lookup(self, name: object) -> T:
        """The entry registered as `name` (or its alias); ConfigError if there is none."""
        return self._entries[self.resolve(name)]

    def build(self, name: object, **params: Any) -> Any:
        """`entry(**params)` after checking `params` against the entry's dataclass fields."""
        entry = self.lookup(name)
        label = self.label.format(kind=self.kind, name=entry.name)  # type: ignore[attr-defined]
        check_params(entry, params, label=label)
        return entry(**params)  # type: ignore[operator]


def describe_params(cls: type) -> str:
    """'valid parameters: a=1.0, b (required)' for a dataclass."""
    parts = []
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            default = field.default
            shown = getattr(default, "__name__", None) if callable(default) else None
            parts.append(f"{field.name}={shown or repr(default)}")
        elif field.default_factory is not dataclasses.MISSING:
            parts.append(f"{field.name}={field.default_factory()!r}")
        else:
            parts.append(f"{field.name} (required)")
    return "valid parameters: " + (", ".join(parts) if parts else "none")


def check_known_params(cls: type, params: Mapping[str, Any], *, label: str) -> None:
    """ConfigError unless `params` names only fields of `cls` (required ones may be missing)."""
    known = {field.name for field in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"{label}: unknown parameter(s) {', '.join(unknown)}; {describe_params(cls)}"
        )


def check_params(cls: type, params: Mapping[str, Any], *, label: str) -> None:
    """ConfigError unless `params` names only fields of `cls` and every required field."""
    check_known_params(cls, params, label=label)
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    missing = [
        field.name
        for field in fields
        if field.name not in params
        and field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(
            f"{label}: missing parameter(s) {', '.join(missing)}; {describe_params(cls)}"
        )


def need_int(
    owner: str, key: str, value: object, minimum: int, *, optional: bool = False, hint: str = ""
) -> int | None:
    """`value` as an int >= minimum (None allowed when `optional`), else a ConfigError."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        alternative = " or None" if optional else ""
        suffix = f"; {hint}" if hint else ""
        raise ConfigError(
            f"{owner}: {key} must be an integer >= {minimum}{alternative}, "
            f"got {key}={value!r}{suffix}"
        )
    return value


def need_float(owner: str, key: str, value: object, *, positive: bool = True) -> float:
    """`value` as a finite float (> 0 if `positive`, else >= 0); ints are accepted."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        if math.isfinite(number) and (number > 0 if positive else number >= 0):
            return number
    bound = "> 0" if positive else ">= 0"
    raise ConfigError(f"{owner}: {key} must be a finite number {bound}, got {key}={value!r}")
