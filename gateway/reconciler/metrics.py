"""The reconciler's Prometheus metrics, registered on a registry it is given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class ReconcilerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.reconciles = Counter(
            "planelink_reconciler_reconciles_total",
            "DataPlane reconciles, by result (ok, deleted, error)",
            ["result"],
            registry=registry,
        )
        self.status_writes = Counter(
            "planelink_reconciler_status_writes_total",
            "DataPlane status writes, by result (written, conflict, not_found, error)",
            ["result"],
            registry=registry,
        )
        self.watch_restarts = Counter(
            "planelink_reconciler_watch_restarts_total",
            "Watches started again, by kind and reason (expired, ended, Unreachable...)",
            ["kind", "reason"],
            registry=registry,
        )
        self.events = Counter(
            "planelink_reconciler_events_total",
            "Kubernetes Events recorded, by reason",
            ["reason"],
            registry=registry,
        )
        self.secret_watches = Gauge(
            "planelink_reconciler_secret_watches",
            "Secrets watched, one per Secret a DataPlane references (up to the limit)",
            registry=registry,
        )
        self.secrets_unwatched = Gauge(
            "planelink_reconciler_secrets_unwatched",
            "Referenced Secrets beyond the watch limit, read at each reconcile instead",
            registry=registry,
        )
        self.leader = Gauge(
            "planelink_reconciler_leader",
            "1 while this replica writes DataPlane status",
            registry=registry,
        )
        self.lease_left_out = Gauge(
            "planelink_reconciler_lease_left_out",
            "Left out of this replica's Lease at its last write to bound its size, by what "
            "(agent_ids: beyond the limit per plane; planes: beyond the annotation's size)",
            ["what"],
            registry=registry,
        )
