"""Texts of the console, shared with `planelink status` (so this module imports nothing): a
duration as kubectl's AGE says it, and texts cut to a bound — the console keeps what others
wrote (DataPlane status, refusal details), and must not grow with it."""


def cut(text: str, limit: int) -> str:
    """`text`, or its first `limit - 1` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def format_duration(seconds: float) -> str:
    """Two units at most, like kubectl's AGE: 42s, 5m12s, 3h4m, 2d5h."""
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
