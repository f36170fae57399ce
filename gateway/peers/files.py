"""Presence without a control plane: the workers of one host announce themselves in files.

Each replica writes `<dir>/<replica id>.json` — its `PeerSink.local()`: id, peer URL, host and
the planes it holds a tunnel to with the agents' ids — atomically (a temporary file renamed
over it), at once when its agents change (at most every `publish_min_interval`) and every
`renew_interval` regardless. It reads the others' files every `poll_interval` and hands the live
ones to its `PeerSink`. A file is live while it keeps changing: every write renames a new inode
into place, and liveness is judged by when *this* replica last saw a file's (inode, mtime, size)
change, as `gateway.reconciler.replicas` judges Leases. Only a file seen for the first time is
aged by its mtime (the writer is on the same host, so on the same clock): a file left behind by
a worker that died before this one started is not taken for a live peer.

A replica that stops deletes its file first, so its siblings stop counting on it at their next
poll; one that dies is forgotten after `lease_duration`.

Bounded: files larger than `max_file_bytes` and files beyond the first `max_files` are ignored,
with a log line; a file that does not parse is ignored with a log line (once per version of
it). The directory must not be writable by others than its owner: whoever can write in it can
announce a replica. It never follows a symbolic link, and never raises out of its loop on a bad
file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import stat
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from certs import InvalidPlaneRefError, PlaneRef, parse_plane_ref
from gateway.interfaces import PeerSink, Replica

log = structlog.get_logger("gateway.peers.files")

SUFFIX = ".json"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
"""A replica id usable as a file name (a pod name, `<pod>-w<i>`)."""
_MAX_AGENT_ID = 253


class PresenceError(ValueError):
    """The presence directory cannot be used, or a presence file is not one."""


@dataclass(frozen=True, kw_only=True)
class PresenceSettings:
    directory: Path
    renew_interval: float = 2.0
    """Each replica rewrites its file this often, changed or not: what keeps it live."""
    lease_duration: float = 10.0
    """A file not seen to change for this long is a dead replica's."""
    publish_min_interval: float = 0.5
    """Agent changes are written at once, but at most this often."""
    poll_interval: float = 0.5
    """How often the others' files are looked at (a stat each; read only when changed)."""
    max_file_bytes: int = 1 << 20
    max_files: int = 64


def encode(replica: Replica) -> bytes:
    """The file's content for `replica`."""
    return json.dumps(
        {
            "id": replica.id,
            "peerUrl": replica.peer_url,
            "host": replica.host,
            "planes": {
                str(plane): sorted(agents) for plane, agents in sorted(replica.planes.items())
            },
        },
        separators=(",", ":"),
    ).encode()


def decode(data: bytes, *, expected_id: str) -> Replica:
    """The replica a file announces; PresenceError if it is not a presence file of
    `expected_id` (its name: a file cannot speak for another replica)."""
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise PresenceError(f"not JSON: {error}") from None
    if not isinstance(document, dict):
        raise PresenceError("not a JSON object")
    replica_id = _string(document, "id")
    if replica_id != expected_id:
        raise PresenceError(f"names replica {replica_id!r}, not {expected_id!r} (its file name)")
    planes_field = document.get("planes", {})
    if not isinstance(planes_field, dict):
        raise PresenceError("planes is not an object")
    planes: dict[PlaneRef, frozenset[str]] = {}
    for key, agents in planes_field.items():
        try:
            plane = parse_plane_ref(key)
        except InvalidPlaneRefError as error:
            raise PresenceError(f"plane {key!r}: {error}") from None
        if not isinstance(agents, list) or not all(
            isinstance(agent, str) and 0 < len(agent) <= _MAX_AGENT_ID for agent in agents
        ):
            raise PresenceError(f"plane {key}: agents is not a list of agent ids")
        planes[plane] = frozenset(agents)
    return Replica(
        id=replica_id,
        peer_url=_string(document, "peerUrl", default=""),
        host=_string(document, "host", default=""),
        planes=planes,
    )


def _string(document: Mapping[str, Any], key: str, *, default: str | None = None) -> str:
    value = document.get(key, default)
    if not isinstance(value, str):
        raise PresenceError(f"{key} is not a string")
    return value


def check_replica_id(replica_id: str) -> str:
    """`replica_id` if it can name a presence file, else PresenceError."""
    if not _ID.fullmatch(replica_id):
        raise PresenceError(
            f"replica id {replica_id!r} cannot name a presence file (letters, digits, '.', '_' "
            "and '-', starting with a letter or digit, at most 253)"
        )
    return replica_id


def prepare_directory(directory: Path) -> None:
    """Create `directory` (0700) if missing; refuse one that others than its owner, this
    process's user, may write in."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise PresenceError(f"presence directory {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise PresenceError(f"presence directory {directory} belongs to another user")
    if info.st_mode & 0o022:
        raise PresenceError(
            f"presence directory {directory} is writable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):o}): anyone who can write there can announce "
            "a replica"
        )


@dataclass
class _Seen:
    stamp: tuple[int, int, int]
    changed_at: float
    replica: Replica | None
    """None: the file could not be read as a presence file."""


@dataclass
class PresenceFiles:
    """One replica's presence file, and its view of the others' (fed to `sink`)."""

    settings: PresenceSettings
    sink: PeerSink
    changes: Callable[[], Awaitable[object]]
    """Resolves when this replica's agents change (`AgentRegistry.wait_for_change`)."""
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time
    _seen: dict[str, _Seen] = field(default_factory=dict, init=False)
    _dirty: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _last_write: float = field(default=float("-inf"), init=False)
    _withdrawn: bool = field(default=False, init=False)
    _over_cap_logged: bool = field(default=False, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        check_replica_id(self.sink.own_id)

    @property
    def path(self) -> Path:
        return self.settings.directory / f"{self.sink.own_id}{SUFFIX}"

    async def start(self) -> None:
        """Check the directory, announce this replica, and keep announcing and reading."""
        prepare_directory(self.settings.directory)
        self.publish()
        self.scan()
        self._tasks = [
            asyncio.create_task(self._follow_changes(), name="presence-changes"),
            asyncio.create_task(self._run(), name="presence-files"),
        ]

    async def stop(self) -> None:
        """Withdraw this replica's file, then stop."""
        self.withdraw()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def withdraw(self) -> None:
        """Stop being announced: delete the file and never write it again."""
        self._withdrawn = True
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def publish(self) -> None:
        """Write this replica's file now (write and rename: readers never see half of it)."""
        if self._withdrawn:
            return
        self._dirty.clear()
        self._last_write = self.clock()
        temporary = self.settings.directory / f".{self.sink.own_id}{SUFFIX}.tmp"
        try:
            descriptor = os.open(
                temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600
            )
            with os.fdopen(descriptor, "wb") as file:
                file.write(encode(self.sink.local()))
            os.replace(temporary, self.path)
        except OSError as error:  # a full disk must not end the gateway; peers will forget us
            log.warning("presence file not written", path=str(self.path), error=str(error))

    def scan(self) -> None:
        """Read the others' files that changed, and give the sink the live replicas."""
        now = self.clock()
        present: set[str] = set()
        live: list[Replica] = []
        for name in self._names():
            present.add(name)
            seen = self._look(name, now)
            if seen is None or seen.replica is None:
                continue
            if now - seen.changed_at < self.settings.lease_duration:
                live.append(seen.replica)
        for gone in self._seen.keys() - present:
            del self._seen[gone]
        self.sink.replace_peers(live)

    def _names(self) -> list[str]:
        own = self.path.name
        try:
            with os.scandir(self.settings.directory) as entries:
                names = sorted(
                    entry.name
                    for entry in entries
                    if entry.name.endswith(SUFFIX)
                    and not entry.name.startswith(".")
                    and entry.name != own
                )
        except OSError as error:
            log.warning("presence directory not read", error=str(error))
            return []
        if len(names) > self.settings.max_files:
            if not self._over_cap_logged:
                log.warning(
                    "presence files beyond the cap ignored",
                    directory=str(self.settings.directory),
                    files=len(names),
                    max_files=self.settings.max_files,
                )
                self._over_cap_logged = True
            names = names[: self.settings.max_files]
        return names

    def _look(self, name: str, now: float) -> _Seen | None:
        path = self.settings.directory / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            return None
        except OSError as error:
            log.warning("presence file not read", path=str(path), error=str(error))
            return None
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        seen = self._seen.get(name)
        if seen is not None and seen.stamp == stamp:
            return seen
        if seen is None:  # first sight: aged by its mtime, which is this host's clock
            age = max(self.wall_clock() - info.st_mtime_ns / 1e9, 0.0)
            changed_at = now - age
        else:
            changed_at = now
        replica = self._read(path, info)
        seen = _Seen(stamp=stamp, changed_at=changed_at, replica=replica)
        self._seen[name] = seen
        return seen

    def _read(self, path: Path, info: os.stat_result) -> Replica | None:
        """The replica a file announces, or None with a log line saying why not."""
        problem: str
        if not stat.S_ISREG(info.st_mode):
            problem = "not a regular file"
        elif info.st_size > self.settings.max_file_bytes:
            problem = f"larger than {self.settings.max_file_bytes} bytes"
        else:
            try:
                descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                with os.fdopen(descriptor, "rb") as file:
                    data = file.read(self.settings.max_file_bytes + 1)
                if len(data) > self.settings.max_file_bytes:
                    raise PresenceError(f"larger than {self.settings.max_file_bytes} bytes")
                return decode(data, expected_id=path.name.removesuffix(SUFFIX))
            except FileNotFoundError:
                return None
            except (OSError, PresenceError) as error:
                problem = str(error)
        log.warning("presence file ignored", path=str(path), problem=problem)
        return None

    async def _follow_changes(self) -> None:
        while True:
            await self.changes()
            self._dirty.set()

    async def _run(self) -> None:
        settings = self.settings
        last_scan = self.clock()
        while True:
            now = self.clock()
            if self._dirty.is_set():
                next_write = self._last_write + settings.publish_min_interval
            else:
                next_write = self._last_write + settings.renew_interval
            wait = max(0.0, min(next_write, last_scan + settings.poll_interval) - now)
            if self._dirty.is_set():
                await asyncio.sleep(wait)
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._dirty.wait()
            now = self.clock()
            due = settings.publish_min_interval if self._dirty.is_set() else settings.renew_interval
            if now - self._last_write >= due:
                self.publish()
            if now - last_scan >= settings.poll_interval:
                self.scan()
                last_scan = now
