"""The import contracts about `gateway/` name every gateway module: a module added later is
forbidden to the reconciler (and to `gateway.interfaces`) until a contract says otherwise."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _forbidden(prefix: str) -> set[str]:
    """The forbidden modules of the contract whose name starts with `prefix`."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, Any]] = config["tool"]["importlinter"]["contracts"]
    contract = next(c for c in contracts if c["name"].startswith(prefix))
    return set(contract["forbidden_modules"])


def _gateway_modules() -> set[str]:
    """Every module and package directly under gateway/, but the reconciler."""
    modules = {f"gateway.{path.stem}" for path in (ROOT / "gateway").glob("*.py")}
    packages = {f"gateway.{path.parent.name}" for path in (ROOT / "gateway").glob("*/__init__.py")}
    return (modules | packages) - {"gateway.__init__", "gateway.reconciler"}


def test_the_reconciler_may_import_no_gateway_module_but_its_ports() -> None:
    forbidden = _forbidden("The reconciler reaches the gateway only")
    assert forbidden == _gateway_modules() - {"gateway.interfaces"}


def test_the_ports_import_no_other_gateway_module() -> None:
    forbidden = _forbidden("gateway.interfaces is plain values")
    assert forbidden == (_gateway_modules() | {"gateway.reconciler"}) - {"gateway.interfaces"}
