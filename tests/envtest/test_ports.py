"""Test servers' ports come from where the kernel never picks, so no client socket can take one
between the choice and the server's bind."""

from __future__ import annotations

import socket

import pytest

from envtest.ports import EPHEMERAL_RANGE, PortWalk, free_port, unpicked_range


def test_the_ports_below_linux_default_ephemeral_range_are_used() -> None:
    assert unpicked_range((32768, 60999)) == range(10000, 32768)


def test_the_stretch_above_is_used_when_it_is_the_larger() -> None:
    assert unpicked_range((10000, 30000)) == range(30001, 65536)


def test_no_stretch_is_left_when_the_kernel_may_pick_any_port() -> None:
    assert not unpicked_range((1024, 65535))


def test_a_port_taken_by_a_listener_is_skipped() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        walk = PortWalk(range(taken, taken + 2))
        assert {walk.take(), walk.take()} == {taken + 1}


def test_a_walk_over_taken_ports_only_says_so() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        taken = listener.getsockname()[1]
        walk = PortWalk(range(taken, taken + 1))
        with pytest.raises(RuntimeError, match=f"no loopback port free in {taken}-{taken}"):
            walk.take()


def test_free_ports_are_outside_the_ephemeral_range_and_differ() -> None:
    low, high = (int(part) for part in EPHEMERAL_RANGE.read_text().split())
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports)
