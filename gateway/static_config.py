"""Planes from a YAML file: the trust source until (and besides) the DataPlane reconciler.

    planes:
      - plane: my-org/plane-a          # <namespace>/<name> of the DataPlane
        clientCA: /etc/planelink/plane-a-ca.crt   # a PEM file (one or more certificates)
      - plane: my-org/plane-b
        clientCAData: |                # or the PEM inline
          -----BEGIN CERTIFICATE-----
          ...
        requireIdentity: false         # opt-out: accept any certificate of this CA (see below)

An agent's certificate must name the plane it serves (URI SAN `planelink://plane/<ns>/<name>`,
as `planelink certs issue-agent` writes it, or CN `<ns>/<name>` without SANs): otherwise any
agent of a CA shared by several planes could serve all of them. `requireIdentity: false` is the
opt-out for one plane whose certificates cannot carry the name (its CA must then be its own);
the gateway's `--agent-identity optional` turns the default for entries that do not say.

Relative paths are read relative to the file. A plane whose CA cannot be read is still listed
(callers get 503, not 404), with the reason in `issues`, shown by /planes and in the log.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

import certs
from certs import PemError, PlaneRef, parse_plane_ref
from gateway.interfaces import PlaneTrust

STATIC_SOURCE = "static:"
"""Prefix of `PlaneTrust.source` for planes read from the file."""


class ConfigError(Exception):
    """The static configuration cannot be used; the message says where and why."""


class _PlaneEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    plane: str
    client_ca: str | None = Field(default=None, alias="clientCA")
    client_ca_data: str | None = Field(default=None, alias="clientCAData")
    require_identity: bool | None = Field(default=None, alias="requireIdentity")

    @model_validator(mode="after")
    def _one_ca(self) -> _PlaneEntry:
        if (self.client_ca is None) == (self.client_ca_data is None):
            raise ValueError("give exactly one of clientCA (a file) or clientCAData (PEM)")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    planes: list[_PlaneEntry] = Field(default_factory=list)


def load_static_planes(path: Path, *, require_identity: bool = True) -> list[PlaneTrust]:
    """Read `path`; raises ConfigError for a file that is not a valid configuration.

    `require_identity` is the default of entries without `requireIdentity`."""
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
            plane = parse_plane_ref(entry.plane)
        except certs.InvalidPlaneRefError as error:
            raise ConfigError(f"{path}: planes[{index}].plane: {error}") from error
        if plane in seen:
            raise ConfigError(f"{path}: planes[{index}]: plane {plane} is listed twice")
        seen.add(plane)
        required = require_identity if entry.require_identity is None else entry.require_identity
        trusts.append(_trust(plane, entry, base=path.parent, require_identity=required))
    return trusts


_CLIENT_CA = certs.FileSetting("clientCA")
"""How an error names a plane's CA file: as its entry in the planes file does."""


def _trust(
    plane: PlaneRef, entry: _PlaneEntry, *, base: Path, require_identity: bool
) -> PlaneTrust:
    source = STATIC_SOURCE + (entry.client_ca or "inline")
    try:
        if entry.client_ca is not None:
            # Named as the planes file names it: "clientCA <path>: expected CA certificates..."
            named = certs.CredentialFile(base / entry.client_ca, _CLIENT_CA)
            cas = tuple(certs.load_certificate_file(named, certs.FileRole.CA_BUNDLE))
        else:
            assert entry.client_ca_data is not None
            cas = tuple(certs.load_pem_certificates(entry.client_ca_data.encode()))
    except (PemError, certs.WrongFileError) as error:
        return PlaneTrust(
            plane=plane,
            client_cas=(),
            require_identity=require_identity,
            source=source,
            issues=(f"client CA unusable: {error}",),
        )
    return PlaneTrust(plane=plane, client_cas=cas, require_identity=require_identity, source=source)


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"])
    return f"{location}: {first['msg']}" if location else first["msg"]
