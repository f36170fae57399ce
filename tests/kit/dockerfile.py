"""What the image's Dockerfile says, for tests that run its command the way a container does."""

from __future__ import annotations

import json
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


def entrypoint() -> list[str]:
    """The image's ENTRYPOINT (exec form): the program and the options a container's args
    follow."""
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("ENTRYPOINT "):
            found: list[str] = json.loads(line.removeprefix("ENTRYPOINT "))
            return found
    raise AssertionError("the Dockerfile has no ENTRYPOINT")
