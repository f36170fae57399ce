"""Test servers' ports come from where the kernel never picks, so no client socket can take one
between the choice and the server's bind."""

from __future__ import annotations

import socket

import pytest

from envtest import ports
from envtest.ports import EPHEMERAL_RANGE, PortWalk, free_port, unpicked_range


def test_the_ports_below_linux_default_ephemeral_range_are_used() -> None:
    assert unpicked_range((32768, 60999)) == range(10000, 32768)


def test_the_stretch_above_is_used_when_it_is_the_larger() -> None:
    assert unpicked_range((10000, 30000)) == range(30001, 65536)


def test_no_stretch_is_left_when_the_kernel_may_pick_any_port() -> None:
    assert not unpicked_range((1024, 65535))


def test_a_port_a_listener_holds_is_not_bindable() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not ports._bindable(listener.getsockname()[1])


def test_a_walk_skips_taken_ports_and_goes_round(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = {20001, 20003}
    monkeypatch.setattr(ports, "_bindable", lambda port: port not in taken)
    walk = PortWalk(range(20000, 20004))
    walk._next = 0
    assert [walk.take() for _ in range(4)] == [20000, 20002, 20000, 20002]


def test_a_walk_over_taken_ports_only_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ports, "_bindable", lambda port: False)
    with pytest.raises(RuntimeError, match="no loopback port free in 20000-20001"):
        PortWalk(range(20000, 20002)).take()


def test_free_ports_are_outside_the_ephemeral_range_and_differ() -> None:
    low, high = (int(part) for part in EPHEMERAL_RANGE.read_text().split())
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == len(ports)
    assert all(not low <= port <= high for port in ports)
