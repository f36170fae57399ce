"""What every role's registry exports the same way: the process and the Python runtime,
`planelink_build_info`, and when its certificates expire.

Each role (gateway, agent) has a registry of its own, and tests run several in one process, so
each registry gets its own collector instances (`register_role_metrics`); none of them touches
prometheus_client's global default registry.

Importing this module turns off the `_created` series of counters, histograms and summaries for
the whole process: they double the series and no dashboard or rule of ours reads them
(prometheus_client checks the switch at each scrape, so metrics made before the import obey too).

Certificate expiry is exported as the notAfter time, a `_timestamp_seconds` gauge, not as
seconds left: Prometheus' instrumentation guidance is to export when something happens and let
the query subtract `time()`; the value then changes only when a certificate does, needs no
clock of ours at scrape time and is exact in any evaluation (`promtool test rules` included).
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

import certs
from certs.ssl_first import read_certificates
from tunnel.event_loop import running_loop

disable_created_metrics()  # type: ignore[no-untyped-call]  # untyped in prometheus_client

BUILD_INFO = "planelink_build_info"


def planelink_version() -> str:
    """The installed planelink package's version ("unknown" when run from a bare checkout)."""
    try:
        return metadata.version("planelink")
    except metadata.PackageNotFoundError:
        return "unknown"


def register_role_metrics(registry: CollectorRegistry, *, role: str) -> None:
    """Add the process (`process_*`), Python (`python_info`, `python_gc_*`) collectors and
    `planelink_build_info{version, python, role, event_loop}` to `registry`."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(_BuildInfo(role))


class _BuildInfo(Collector):
    def __init__(self, role: str) -> None:
        self._labels = [planelink_version(), platform.python_version(), role]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            BUILD_INFO,
            "Always 1: the planelink version, Python version, role (gateway, agent) and event"
            " loop (asyncio, uvloop) of this process",
            labels=["version", "python", "role", "event_loop"],
        )
        # Read at scrape time, which runs on the role's loop: the registry may be made before.
        family.add_metric([*self._labels, running_loop()], 1)
        yield family


@dataclass(frozen=True)
class CertificateExpiry:
    """When one certificate (or the earliest of a bundle) stops being valid."""

    kind: str
    """What it is, a fixed word per role (e.g. `serving`, `caller_ca`, `client`)."""
    plane: str
    """The plane it belongs to ("" for the process's own)."""
    not_after: float
    """notAfter, in seconds since the epoch."""


CertificateSource = Callable[[], Iterable[CertificateExpiry]]


class HasNotAfter(Protocol):
    """A certificate, decoded by ``cryptography`` or read by :mod:`certs.der`."""

    @property
    def not_valid_after_utc(self) -> datetime: ...


def earliest_not_after(certificates: Iterable[HasNotAfter]) -> float | None:
    """The earliest notAfter of `certificates` (a chain or a CA bundle fails with its first
    certificate to expire), None if there are none."""
    times = [certificate.not_valid_after_utc.timestamp() for certificate in certificates]
    return min(times) if times else None


def file_not_after(path: Path) -> float | None:
    """The earliest notAfter of the PEM certificates in `path`, None if it cannot be read (the
    code that uses the file reports that, with the reason)."""
    try:
        data = path.read_bytes()
        # The DER reader first: an agent reads its gateway CA without cryptography.
        return earliest_not_after(read_certificates(data) or certs.load_pem_certificates(data))
    except (OSError, ValueError, certs.CertsError):
        return None


def file_expiries(files: Iterable[tuple[str, Path]]) -> list[CertificateExpiry]:
    """`CertificateExpiry` of each (kind, PEM file) readable now, as a process's own."""
    found = [(kind, file_not_after(path)) for kind, path in files]
    return [CertificateExpiry(kind, "", when) for kind, when in found if when is not None]


class CertificateExpiryCollector(Collector):
    """`<name>{kind, plane}`: the earliest notAfter per kind and plane among what `sources`
    yield at scrape time (several agents of a plane: the first to expire)."""

    def __init__(self, name: str, sources: Iterable[CertificateSource] = ()) -> None:
        self._name = name
        self.sources = list(sources)

    def collect(self) -> Iterator[Metric]:
        earliest: dict[tuple[str, str], float] = {}
        for expiry in (expiry for source in self.sources for expiry in source()):
            key = (expiry.kind, expiry.plane)
            earliest[key] = min(expiry.not_after, earliest.get(key, expiry.not_after))
        family = GaugeMetricFamily(
            self._name,
            "When a certificate stops being valid (notAfter, seconds since the epoch), by kind"
            " and plane; for a bundle or several agents, the earliest",
            labels=["kind", "plane"],
        )
        for (kind, plane), when in sorted(earliest.items()):
            family.add_metric([kind, plane], when)
        yield family
