"""Texts cut to a bound: the console keeps what others wrote (DataPlane status, refusal
details), and must not grow with it."""


def cut(text: str, limit: int) -> str:
    """`text`, or its first `limit - 1` characters and an ellipsis."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"
