"""A duration as kubectl's AGE column says it, for `planelink status` and the gateway's console
alike (standard library only, so the status command stays a light client)."""


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
