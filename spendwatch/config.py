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


# -- typed values for the parts that read their own table (issue 8: `[serve]`, `[slack]`) -------------------
_MISSING: Any = object()


class Table:
    """One table of the configuration file, read key by key with its type checked.

    Every error names the file, the table and the key (`settings.toml: [serve] interval_s: must be a number
    > 0, not "5m"`), and `done()` refuses keys nobody read, so a misspelt key is an error, not a silent
    default.
    """

    def __init__(self, data: dict[str, Any] | None, name: str, *, path: Path | str | None = None) -> None:
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{self._where(path)}[{name}] must be a table")
        self.data, self.name, self.path = dict(data or {}), name, path
        self._read: set[str] = set()

    @staticmethod
    def _where(path: Path | str | None) -> str:
        return f"{path}: " if path is not None else ""

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self._where(self.path)}[{self.name}] {key}: {message}")

    def _get(self, key: str, default: Any) -> Any:
        self._read.add(key)
        if key not in self.data:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        return self.data[key]

    def string(self, key: str, default: Any = _MISSING, *, choices: tuple[str, ...] = (),
               empty: bool = False) -> Any:
        """A string value; `empty`: "" is a value too (it says "none" where the default is something)."""
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if empty and value == "":
            return value
        if not isinstance(value, str) or not value.strip():
            raise self.error(key, f"must be a non-empty string, not {value!r}")
        if choices and value not in choices:
            raise self.error(key, f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, minimum: float = 0.0, above: bool = False) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        # bool is an int subclass: `interval_s = true` must not read as 1 second
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum or \
                (above and value == minimum):
            bound = f"> {minimum:g}" if above else f">= {minimum:g}"
            raise self.error(key, f"must be a number {bound}, not {value!r}")
        return float(value)

    def integer(self, key: str, default: Any = _MISSING, *, minimum: int = 0, maximum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum or \
                (maximum is not None and value > maximum):
            top = f"..{maximum}" if maximum is not None else " or more"
            raise self.error(key, f"must be an integer {minimum}{top}, not {value!r}")
        return value

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if not isinstance(value, bool):
            raise self.error(key, f"must be true or false, not {value!r}")
        return value

    def strings(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default and key not in self.data:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.error(key, f"must be a list of non-empty strings, not {value!r}")
        return tuple(value)

    def done(self) -> None:
        """Refuse keys that were never read (typos, options of another version)."""
        unknown = sorted(set(self.data) - self._read)
        if unknown:
            raise ConfigError(f"{self._where(self.path)}[{self.name}]: unknown key(s) {', '.join(unknown)}")
