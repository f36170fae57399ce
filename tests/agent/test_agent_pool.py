"""The upstream pool's idle connections expire one by one, each `idle_timeout` after its return."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from kubeproxy import ConnectionPool, load_kubeconfig
from tests.kit.waits import eventually

if TYPE_CHECKING:
    from tests.agent.conftest import UpstreamPeer

IDLE_TIMEOUT = 2.0
RETURNED_APART = 1.0
"""Between the two returns, and so between the two expiries: a stall of the event loop shorter
than this (a slow, loaded machine) cannot make one sweep take both, nor the first expire before
the second is returned."""


async def test_idle_connections_expire_in_the_order_they_were_returned(
    upstream_peer: UpstreamPeer, tmp_path: Path
) -> None:
    upstream = load_kubeconfig(upstream_peer.kubeconfig(tmp_path / "kubeconfig"))
    pool = ConnectionPool(upstream, max_idle=4, idle_timeout=IDLE_TIMEOUT)
    try:
        first, second = await pool.acquire(), await pool.acquire()
        await eventually(
            lambda: upstream_peer.open_connections == 2,
            within=10,
            message="never: upstream_peer.open_connections == 2",
        )
        pool.release(first, reusable=True)
        await asyncio.sleep(RETURNED_APART)  # the behaviour under test is a duration
        pool.release(second, reusable=True)
        assert pool.idle == 2
        await eventually(lambda: pool.idle < 2, within=10, message="never: pool.idle < 2")
        # The first has gone; the second, returned later, is still there and still open.
        assert pool.idle == 1
        assert (first.closed, second.closed) == (True, False)
        await eventually(
            lambda: upstream_peer.open_connections == 1,
            within=10,
            message="never: upstream_peer.open_connections == 1",
        )
        await eventually(lambda: pool.idle == 0, within=10, message="never: pool.idle == 0")
        assert second.closed
        await eventually(
            lambda: upstream_peer.open_connections == 0,
            within=10,
            message="never: upstream_peer.open_connections == 0",
        )
        # A connection taken back from the pool is no longer swept.
        third = await pool.acquire()
        pool.release(third, reusable=True)
        again = await pool.acquire()
        assert again is third
        # Past the idle timeout: it must survive, being busy.
        await asyncio.sleep(IDLE_TIMEOUT + 0.1)
        assert not again.closed
        pool.release(again, reusable=False)
    finally:
        pool.close()
