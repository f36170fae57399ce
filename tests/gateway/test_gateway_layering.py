"""The import contracts about `gateway/` name every gateway module: a module added later is
forbidden to the reconciler (and to `gateway.interfaces`) until a contract says otherwise."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _contract(prefix: str) -> dict[str, object]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["name"].startswith(prefix))


def _gateway_modules() -> set[str]:
    modules = {f"gateway.{path.stem}" for path in (ROOT / "gateway").glob("*.py")}
    return modules - {"gateway.__init__"}


def test_the_reconciler_may_import_no_gateway_module_but_its_ports() -> None:
    forbidden = set(_contract("The reconciler reaches the gateway only")["forbidden_modules"])
    assert forbidden == _gateway_modules() - {"gateway.interfaces"}


def test_the_ports_import_no_other_gateway_module() -> None:
    forbidden = set(_contract("gateway.interfaces is plain values")["forbidden_modules"])
    assert forbidden == (_gateway_modules() | {"gateway.reconciler"}) - {"gateway.interfaces"}
