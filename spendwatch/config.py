"""spendwatch's configuration file: TOML, one table per part (`[aws]`, `[slack]`, ...).

TOML because Python reads it without a dependency (`tomllib`) and it has typed values (lists, integers,
booleans) that YAML guesses and INI does not have. Each part of spendwatch reads its own table and turns it
into its own typed settings (e.g. `spendwatch.connectors.aws.AwsConfig.from_dict`); this module only finds
the file, parses it and hands tables out, so it stays free of any one part's options.

Example::

    [aws]
    accounts = ["012345678901"]
    role_name = "spendwatch-read"
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """The configuration file cannot be read, or one of its values is wrong. The message names the file
    and the key."""


def load(path: Path | str) -> dict[str, Any]:
    """The whole configuration file as nested dicts. Raises ConfigError on a missing or malformed file."""
    path = Path(path).expanduser()
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from exc


def section(path: Path | str, name: str) -> dict[str, Any] | None:
    """Table `name` of the configuration file, or None when the file has no such table."""
    value = load(path).get(name)
    if value is not None and not isinstance(value, dict):
        raise ConfigError(f"{path}: [{name}] must be a table")
    return value
