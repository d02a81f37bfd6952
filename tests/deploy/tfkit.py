"""Helpers for the Terraform tests: parse with python-hcl2, find `file()` references, load the generator."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import hcl2
from hcl2 import SerializationOptions

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "deploy" / "terraform"
MODULES = ("aws", "gcp", "azure")
GENERATED = {
    "read": TF / "aws" / "policies" / "read.json",
    "quarantine": TF / "aws" / "policies" / "quarantine.json",
    "approvals": TF / "aws" / "policies" / "approvals.json",
    "athena": TF / "aws" / "policies" / "athena.json",
    "gcp_reader": TF / "gcp" / "roles" / "reader.json",
    "gcp_quarantine": TF / "gcp" / "roles" / "quarantine.json",
    "azure_reader": TF / "azure" / "roles" / "reader.json",
    "azure_quarantine": TF / "azure" / "roles" / "quarantine.json",
}
_FILE_CALL = re.compile(r'file\(\\?"\$\{path\.module\}/([^"\\]+)\\?"\)')


def tf_files() -> list[Path]:
    return sorted(TF.rglob("*.tf"))


def load(path: Path) -> dict[str, Any]:
    """The file parsed by python-hcl2, strings unquoted; a parse error names the file."""
    try:
        with path.open() as f:
            return dict(hcl2.load(f, serialization_options=SerializationOptions(strip_string_quotes=True)))
    except Exception as exc:  # python-hcl2 raises lark errors of several kinds
        raise AssertionError(f"{path}: python-hcl2 cannot parse it: {exc}") from exc


def strings(node: Any) -> list[str]:
    """Every string anywhere in a parsed document (expressions are strings like "${...}")."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return []


def file_references(path: Path) -> set[Path]:
    """The files a .tf file reads with file("${path.module}/..."), resolved."""
    return {(path.parent / rel).resolve() for s in strings(load(path)) for rel in _FILE_CALL.findall(s)}


def blocks(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    """`resource`/`data` blocks as {"type.name": body}; `module`/`variable`/`output` as {"name": body}."""
    out: dict[str, dict[str, Any]] = {}
    for entry in doc.get(kind, []):
        for key, value in entry.items():
            if key.startswith("__"):
                continue
            if kind in ("resource", "data"):
                for name, body in value.items():
                    if not name.startswith("__"):
                        out[f"{key}.{name}"] = body
            else:
                out[key] = value
    return out


def locals_of(doc: dict[str, Any]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for entry in doc.get("locals", []):
        merged.update({k: v for k, v in entry.items() if not k.startswith("__")})
    return merged


def gen_policies() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_policies", TF / "gen_policies.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
