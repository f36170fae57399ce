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

The file is checked by hand rather than with pydantic: four fields do not need a dozen megabytes
of a gateway's resting memory. A mistake is named by where it is (`planes[2].clientCA`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

import certs
from certs import PemError, PlaneRef, parse_plane_ref
from gateway.interfaces import PlaneTrust

STATIC_SOURCE = "static:"
"""Prefix of `PlaneTrust.source` for planes read from the file."""


class ConfigError(Exception):
    """The static configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class _PlaneEntry:
    plane: str
    client_ca: str | None
    client_ca_data: str | None
    require_identity: bool | None


_FIELDS = {"plane": str, "clientCA": str, "clientCAData": str, "requireIdentity": bool}


def _entries(raw: object) -> list[_PlaneEntry]:
    """The planes of a parsed file; ValueError naming where the first mistake is."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ValueError("the file must be a mapping with a `planes` list")
    if unknown := sorted(set(raw) - {"planes"}):
        raise ValueError(f"{unknown[0]}: unknown field (the file has `planes` only)")
    planes = raw.get("planes") or []
    if not isinstance(planes, list):
        raise ValueError("planes: must be a list")
    return [_entry(item, f"planes[{index}]") for index, item in enumerate(planes)]


def _entry(item: object, where: str) -> _PlaneEntry:
    if not isinstance(item, dict):
        raise ValueError(f"{where}: must be a mapping")
    for key, value in item.items():
        kind = _FIELDS.get(key)
        if kind is None:
            raise ValueError(f"{where}.{key}: unknown field (known: {', '.join(_FIELDS)})")
        if not isinstance(value, kind):
            raise ValueError(f"{where}.{key}: must be a {'boolean' if kind is bool else 'string'}")
    if "plane" not in item:
        raise ValueError(f"{where}.plane: missing")
    if ("clientCA" in item) == ("clientCAData" in item):
        raise ValueError(f"{where}: give exactly one of clientCA (a file) or clientCAData (PEM)")
    return _PlaneEntry(
        plane=item["plane"],
        client_ca=item.get("clientCA"),
        client_ca_data=item.get("clientCAData"),
        require_identity=item.get("requireIdentity"),
    )


def load_static_planes(path: Path, *, require_identity: bool = True) -> list[PlaneTrust]:
    """Read `path`; raises ConfigError for a file that is not a valid configuration.

    `require_identity` is the default of entries without `requireIdentity`."""
    try:
        entries = _entries(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValueError) as error:
        raise ConfigError(f"{path}: {error}") from error
    trusts: list[PlaneTrust] = []
    seen: set[PlaneRef] = set()
    for index, entry in enumerate(entries):
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
