"""Presence files (`gateway.peers.files`): what a replica writes, which files it believes, and
what it does with the rest — with a hand-driven clock, so liveness is exact."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest
import structlog

from certs import PlaneRef, plane_ref
from gateway.interfaces import Replica
from gateway.peers import PeerDirectory
from gateway.peers.files import (
    PresenceError,
    PresenceFiles,
    PresenceSettings,
    decode,
    encode,
    prepare_directory,
)
from tests.kit.waits import eventually, wait_for

PLANE = plane_ref("team-a", "prod")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Agents:
    """What the presence files read of the agents: their planes, and a change event."""

    def __init__(self) -> None:
        self.planes: dict[PlaneRef, frozenset[str]] = {}
        self._changed = asyncio.Event()

    def local_planes(self) -> Mapping[PlaneRef, frozenset[str]]:
        return self.planes

    def change(self, planes: dict[PlaneRef, frozenset[str]]) -> None:
        self.planes = planes
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_change(self) -> object:
        return await self._changed.wait()


def presence(
    directory: Path,
    replica_id: str,
    *,
    clock: Clock,
    agents: Agents | None = None,
    wall: float | None = None,
    **settings: float,
) -> tuple[PresenceFiles, PeerDirectory]:
    agents = agents or Agents()
    peers = PeerDirectory(
        replica_id, local_planes=agents.local_planes, peer_url="https://127.0.0.1:1", host="h"
    )
    files = PresenceFiles(
        PresenceSettings(directory=directory, **settings),  # type: ignore[arg-type]
        peers,
        agents.wait_for_change,
        clock=clock,
        wall_clock=(lambda: wall) if wall is not None else time.time,
    )
    return files, peers


def ids(replicas: Iterable[Replica]) -> list[str]:
    return [replica.id for replica in replicas]


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "presence"
    prepare_directory(path)
    return path


def test_a_replica_round_trips_through_its_file() -> None:
    replica = Replica(
        id="gw-w1", peer_url="https://127.0.0.1:8445", host="gw", planes={PLANE: frozenset({"a"})}
    )
    assert decode(encode(replica), expected_id="gw-w1") == replica


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"id": "gw-w2"}', "names replica 'gw-w2'"),
        (b'{"id": "gw-w1", "planes": []}', "planes is not an object"),
        (b'{"id": "gw-w1", "planes": {"no-slash": []}}', "plane 'no-slash'"),
        (b'{"id": "gw-w1", "planes": {"a/b": [1]}}', "not a list of agent ids"),
        (b'{"id": "gw-w1", "peerUrl": 5}', "peerUrl is not a string"),
    ],
)
def test_a_file_that_is_not_a_presence_file_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(PresenceError, match=problem):
        decode(data, expected_id="gw-w1")


def test_a_directory_others_can_write_in_is_refused(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    with pytest.raises(PresenceError, match="writable by group or others"):
        prepare_directory(tmp_path)


def test_a_missing_directory_is_made_private(tmp_path: Path) -> None:
    prepare_directory(tmp_path / "new")
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700


def test_each_replica_sees_the_other_and_writes_atomically(directory: Path) -> None:
    clock = Clock()
    one_agents = Agents()
    one_agents.planes = {PLANE: frozenset({"agent-1"})}
    one, one_peers = presence(directory, "gw-w0", clock=clock, agents=one_agents)
    two, two_peers = presence(directory, "gw-w1", clock=clock)
    one.publish()
    two.publish()
    one.scan()
    two.scan()
    assert ids(one_peers.peers()) == ["gw-w1"]
    assert two_peers.holdings(PLANE) == {"agent-1": ["gw-w0"]}
    # Only the two files remain: the temporary one was renamed over the final name.
    assert sorted(path.name for path in directory.iterdir()) == ["gw-w0.json", "gw-w1.json"]
    assert json.loads((directory / "gw-w0.json").read_bytes())["planes"] == {
        "team-a/prod": ["agent-1"]
    }
    assert (directory / "gw-w0.json").stat().st_mode & 0o777 == 0o600


def test_a_file_that_stops_changing_is_a_dead_replica(directory: Path) -> None:
    clock = Clock()
    reader, peers = presence(directory, "gw-w0", clock=clock, lease_duration=10.0)
    writer, _ = presence(directory, "gw-w1", clock=clock)
    writer.publish()
    reader.scan()
    assert ids(peers.peers()) == ["gw-w1"]
    clock.now += 9.0
    reader.scan()
    assert ids(peers.peers()) == ["gw-w1"], "still within the lease duration"
    writer.publish()  # a renewal: a new inode renamed into place, seen by the next scan
    reader.scan()
    clock.now += 9.0
    reader.scan()
    assert ids(peers.peers()) == ["gw-w1"], "renewal seen 9 s ago"
    clock.now += 1.0
    reader.scan()
    assert peers.peers() == [], "not changed for the lease duration"


def test_a_file_left_by_an_earlier_run_is_not_taken_for_a_live_replica(
    directory: Path,
) -> None:
    clock = Clock()
    writer, _ = presence(directory, "gw-w1", clock=clock)
    writer.publish()
    written_at = (directory / "gw-w1.json").stat().st_mtime
    reader, peers = presence(directory, "gw-w0", clock=clock, wall=written_at + 60.0)
    reader.scan()
    assert peers.peers() == []


def test_a_withdrawn_replica_is_gone_at_the_next_scan(directory: Path) -> None:
    clock = Clock()
    reader, peers = presence(directory, "gw-w0", clock=clock)
    writer, _ = presence(directory, "gw-w1", clock=clock)
    writer.publish()
    reader.scan()
    assert ids(peers.peers()) == ["gw-w1"]
    writer.withdraw()
    writer.publish()  # never written again once withdrawn
    reader.scan()
    assert peers.peers() == []
    assert not (directory / "gw-w1.json").exists()


def test_corrupt_oversized_and_surplus_files_are_ignored_with_a_log_line(
    directory: Path,
) -> None:
    clock = Clock()
    reader, peers = presence(directory, "gw-w0", clock=clock, max_file_bytes=200, max_files=3)
    for name in ("gw-w1", "gw-w2"):
        presence(directory, name, clock=clock)[0].publish()
    (directory / "bad.json").write_bytes(b"{not json")
    (directory / "big.json").write_bytes(b" " * 201)
    (directory / "gw-w9.json").symlink_to(directory / "gw-w1.json")
    with structlog.testing.capture_logs() as logs:
        reader.scan()
        reader.scan()  # unchanged files are not read (nor logged) again
    # Sorted: bad, big, gw-w1 are the three looked at; gw-w2 and the link are beyond the cap.
    assert ids(peers.peers()) == ["gw-w1"]
    ignored = sorted(
        (Path(entry["path"]).name, entry["problem"])
        for entry in logs
        if entry["event"] == "presence file ignored"
    )
    assert ignored == [
        ("bad.json", ignored[0][1]),
        ("big.json", "larger than 200 bytes"),
    ]
    assert "not JSON" in ignored[0][1]
    assert [entry["files"] for entry in logs if "beyond the cap" in entry["event"]] == [5]


def test_a_symbolic_link_is_not_followed(directory: Path) -> None:
    clock = Clock()
    reader, peers = presence(directory, "gw-w0", clock=clock)
    presence(directory, "gw-w1", clock=clock)[0].publish()
    (directory / "gw-w1.json").rename(directory / "elsewhere")
    (directory / "gw-w1.json").symlink_to(directory / "elsewhere")
    with structlog.testing.capture_logs() as logs:
        reader.scan()
    assert peers.peers() == []
    assert [entry["problem"] for entry in logs] == ["not a regular file"]


async def test_running_files_announce_agent_changes_and_withdraw_on_stop(directory: Path) -> None:
    """The loop itself, on the real clock: a change of agents reaches a sibling's view."""
    agents = Agents()
    one, _ = presence(
        directory,
        "gw-w0",
        clock=Clock(),
        agents=agents,
        publish_min_interval=0.01,
        poll_interval=0.01,
    )
    one.clock = asyncio.get_running_loop().time
    watcher, watched = presence(directory, "gw-w1", clock=Clock(), poll_interval=0.01)
    watcher.clock = asyncio.get_running_loop().time
    await one.start()
    await watcher.start()
    try:
        assert ids(watched.peers()) == ["gw-w0"], "seen by the first scan, at start"
        assert watched.holdings(PLANE) == {}
        agents.change({PLANE: frozenset({"agent-1"})})

        await eventually(
            lambda: watched.holdings(PLANE) == {"agent-1": ["gw-w0"]},
            within=10,
            message="the sibling never saw the new agent",
        )
        left = asyncio.Event()
        watched.subscribe(left.set)
        await one.stop()
        assert not one.path.exists()
        await wait_for(left.wait())
        assert watched.peers() == []
    finally:
        await one.stop()
        await watcher.stop()
