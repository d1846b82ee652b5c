"""Config files: reading TOML text (UTF-8 only, presets by name) and writing it back."""

from __future__ import annotations

import codecs
import json
import tomllib
from pathlib import Path
from typing import Any

from fedpdmm.errors import ConfigError


def presets() -> dict[str, Path]:
    """The preset configs shipped with the package (`configs/` in the repository), by name."""
    folder = Path(__file__).parent / "presets"
    return {path.stem: path for path in sorted(folder.glob("*.toml"))}


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file (or a preset, by name) into a dict; one-line errors."""
    path = Path(path)
    try:
        if not path.exists() and str(path) in presets():
            path = presets()[str(path)]
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist (presets: {', '.join(presets())})"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"config path {path} is a directory, not a TOML file") from None
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    try:
        return tomllib.loads(_decode(path, data))
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None


_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _decode(path: Path, data: bytes) -> str:
    """The text of a config file: UTF-8 (a leading byte-order mark is allowed), no NUL bytes."""
    for bom, encoding in _WIDE_BOMS:
        if data.startswith(bom):
            raise ConfigError(
                f"config file {path} is {encoding} text; it must be UTF-8 TOML: save it as UTF-8"
            )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"config file {path} is not UTF-8 (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); it must be UTF-8 TOML: save it as UTF-8"
        ) from None
    if "\x00" in text:
        raise ConfigError(
            f"config file {path} contains a NUL byte (offset {data.index(0)}); it must be "
            "UTF-8 TOML text, not a binary file"
        )
    return text


def dump_toml(data: dict[str, Any]) -> str:
    """Write a nested dict of TOML-compatible values as TOML text (tables after plain keys)."""
    lines: list[str] = []
    _dump_table(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _dump_table(table: dict[str, Any], prefix: list[str], lines: list[str]) -> None:
    plain = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if prefix and (plain or not tables):
        lines.append(f"\n[{'.'.join(prefix)}]")
    for key, value in plain.items():
        lines.append(f"{key} = {toml_value(value)}")
    for key, value in tables.items():
        _dump_table(value, [*prefix, key], lines)


def toml_value(value: Any) -> str:
    """One TOML value (bool, number, string or list of them) as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
