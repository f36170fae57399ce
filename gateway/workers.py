"""What makes a process worker i of a gateway that runs `--workers N` processes on one host.

Each worker is a replica of its own (`<identity>-w<i>`: its own Lease, presence file and
tunnels from every agent) that binds the same agent, caller and operator ports as its siblings
with SO_REUSEPORT — the kernel spreads new connections among them — and its own peer port
(the configured one + i; 0 stays 0: each picks one and advertises it). Pure: settings in,
settings out; the supervisor that starts the processes is `planelink.supervisor`.
"""

from __future__ import annotations

from dataclasses import replace

from gateway.app import GatewaySettings

MAX_WORKERS = 64
"""More processes than this on one host is a mistake, not a plan (and the presence files'
cap, `gateway.peers.files.PresenceSettings.max_files`)."""


def worker_id(identity: str, index: int) -> str:
    """The replica id of worker `index` of the gateway named `identity`."""
    return f"{identity}-w{index}"


def check_workers(settings: GatewaySettings, workers: int) -> None:
    """Refuse (ValueError) a number of workers that `settings` cannot be shared by."""
    if not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"--workers must be between 1 and {MAX_WORKERS}")
    if workers == 1:
        return
    unshared = [
        name
        for name, port in (
            ("--agent-port", settings.agents.port),
            ("--caller-port", settings.callers.port),
            ("--operator-port", settings.operator_port),
        )
        if port == 0
    ]
    if unshared:
        raise ValueError(
            f"--workers {workers} needs fixed ports to share, but {', '.join(unshared)} "
            "is 0 (each process would get a port of its own)"
        )
    reconciler = settings.reconciler
    if reconciler is not None and settings.peers is None:
        raise ValueError(
            f"--workers {workers} with --reconcile needs --peer-certificate: the replicas of "
            "other pods forward to these workers, and must trust their peer certificates"
        )
    if reconciler is not None and reconciler.coordination is None:
        raise ValueError(
            f"--workers {workers} with --reconcile needs --lease-namespace: each worker is a "
            "replica, and replicas agree on status (and learn of each other) through Leases"
        )


def worker_settings(settings: GatewaySettings, *, index: int, identity: str) -> GatewaySettings:
    """Worker `index`'s settings, from the gateway's."""
    replica_id = worker_id(identity, index)
    reconciler = settings.reconciler
    if reconciler is not None and reconciler.coordination is not None:
        coordination = replace(reconciler.coordination, identity=replica_id)
        reconciler = replace(reconciler, coordination=coordination)
    peers = settings.peers
    if peers is not None and peers.port != 0:
        peers = replace(peers, port=peers.port + index)
    return replace(
        settings,
        replica_id=replica_id,
        host=identity,
        agents=replace(settings.agents, reuse_port=True),
        callers=replace(settings.callers, reuse_port=True),
        operator_reuse_port=True,
        peers=peers,
        reconciler=reconciler,
        # Without the reconciler the presence files are how workers learn of each other.
        presence_dir=settings.presence_dir if settings.reconciler is None else None,
    )
