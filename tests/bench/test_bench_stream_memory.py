"""An open tunnel stream costs a few KiB on each side (issue #7's budget is 10 KiB per process)."""

from __future__ import annotations

from bench.stream_memory import measure


async def test_an_open_stream_costs_less_than_10_kib_per_side() -> None:
    result = await measure(500)
    assert result["streams"] == 500
    assert 0 < result["bytesPerStreamPerSide"] < 10 * 1024, result
