"""Planes from a YAML file: the trust source until (and besides) the DataPlane reconciler.

    planes:
      - plane: my-org/plane-a          # <namespace>/<name> of the DataPlane
        clientCA: /etc/planelink/plane-a-ca.crt   # a PEM file (one or more certificates)
        requireIdentity: true          # also demand the plane's SAN in the agent certificate
      - plane: my-org/plane-b
        clientCAData: |                # or the PEM inline
          -----BEGIN CERTIFICATE-----
          ...

Relative paths are read relative to the file. A plane whose CA cannot be read is still listed
(callers get 503, not 404), with the reason in `issues`, shown by /planes and in the log.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import certs
from certs import PemError, PlaneRef
from gateway.trust import PlaneTrust

STATIC_SOURCE = "static:"
"""Prefix of `PlaneTrust.source` for planes read from the file."""


class ConfigError(Exception):
    """The static configuration cannot be used; the message says where and why."""


class _PlaneEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    plane: str
    client_ca: str | None = Field(default=None, alias="clientCA")
    client_ca_data: str | None = Field(default=None, alias="clientCAData")
    require_identity: bool = Field(default=False, alias="requireIdentity")

    @model_validator(mode="after")
    def _one_ca(self) -> _PlaneEntry:
        if (self.client_ca is None) == (self.client_ca_data is None):
            raise ValueError("give exactly one of clientCA (a file) or clientCAData (PEM)")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    planes: list[_PlaneEntry] = Field(default_factory=list)


def load_static_planes(path: Path) -> list[PlaneTrust]:
    """Read `path`; raises ConfigError for a file that is not a valid configuration."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        parsed = _File.model_validate(raw)
    except (OSError, yaml.YAMLError) as error:
        raise ConfigError(f"{path}: {error}") from error
    except ValidationError as error:
        raise ConfigError(f"{path}: {_first_error(error)}") from error
    trusts: list[PlaneTrust] = []
    seen: set[PlaneRef] = set()
    for index, entry in enumerate(parsed.planes):
        try:
            plane = PlaneRef.parse(entry.plane)
        except certs.InvalidPlaneRefError as error:
            raise ConfigError(f"{path}: planes[{index}].plane: {error}") from error
        if plane in seen:
            raise ConfigError(f"{path}: planes[{index}]: plane {plane} is listed twice")
        seen.add(plane)
        trusts.append(_trust(plane, entry, base=path.parent))
    return trusts


def _trust(plane: PlaneRef, entry: _PlaneEntry, *, base: Path) -> PlaneTrust:
    source = STATIC_SOURCE + (entry.client_ca or "inline")
    try:
        if entry.client_ca is not None:
            pem = (base / entry.client_ca).read_bytes()
        else:
            assert entry.client_ca_data is not None
            pem = entry.client_ca_data.encode()
        cas = tuple(certs.load_pem_certificates(pem))
    except (OSError, PemError) as error:
        return PlaneTrust(
            plane=plane, client_cas=(), source=source, issues=(f"client CA unusable: {error}",)
        )
    return PlaneTrust(
        plane=plane, client_cas=cas, require_identity=entry.require_identity, source=source
    )


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']}" if location else first["msg"]
