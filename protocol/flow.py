"""Credit-based flow control windows (as in HTTP/2), receive side and send side.

Receive side, per stream and per connection, one :class:`ReceiveWindow` keeps::

    available + buffered + pending == size        (always)

* ``available``: credit the peer still has (it may send that many more DATA bytes);
* ``buffered``: bytes delivered to the application and not yet reported ``consumed``;
* ``pending``: consumed bytes not yet returned to the peer as WINDOW_UPDATE.

Credit is returned when ``pending`` reaches half the window, not on every read, so a
reader that consumes in small pieces does not cause a WINDOW_UPDATE per piece. Received
bytes beyond ``available`` are a FLOW_CONTROL_ERROR; therefore ``buffered`` can never exceed
the window size: the receive buffer is bounded by the credit granted.

Send side windows are plain integers kept by the scheduler; :func:`grow` adds an increment
and refuses to pass ``2**31 - 1``.
"""

from __future__ import annotations

from protocol.settings import MAX_WINDOW

__all__ = ["ReceiveWindow", "grow"]


class ReceiveWindow:
    """Credit granted to the peer for one stream or for the whole connection."""

    __slots__ = ("available", "buffered", "pending", "size", "threshold")

    def __init__(self, size: int) -> None:
        self.size = size
        self.available = size
        self.buffered = 0
        self.pending = 0
        self.threshold = max(1, size // 2)

    def receive(self, n: int) -> bool:
        """Account ``n`` received DATA bytes; ``False`` if that exceeds the credit granted."""
        if n > self.available:
            return False
        self.available -= n
        self.buffered += n
        return True

    def consume(self, n: int) -> int:
        """The application is done with ``n`` bytes; returns an increment to announce, or 0.

        The caller guarantees ``n <= buffered``.
        """
        self.buffered -= n
        pending = self.pending + n
        if pending >= self.threshold:
            self.pending = 0
            self.available += pending
            return pending
        self.pending = pending
        return 0


def grow(window: int, increment: int) -> int | None:
    """``window + increment``, or ``None`` if the result would exceed ``2**31 - 1``."""
    total = window + increment
    return None if total > MAX_WINDOW else total
