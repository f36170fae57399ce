"""The Go load generator (`bench/goclient/main.go`, net/http as client-go uses it): built once
per source into a cache, run as a process of its own by `GoDriver`.

The cache is ``$XDG_CACHE_HOME/planelink/goclient-<source hash>/goclient`` (``~/.cache`` by
default); the build uses the local toolchain only (``GOTOOLCHAIN=local``, ``GOPROXY=off``: the
program needs nothing but the standard library). `go` is looked up on $PATH, then at
/usr/local/go/bin/go.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from bench.drivers import CpuMeter, Load
from bench.processes import FAST, Stack, Target

SOURCE = Path(__file__).with_name("goclient") / "main.go"
_FALLBACK_GO = Path("/usr/local/go/bin/go")


class GoClientError(RuntimeError):
    """No Go toolchain, the build failed, or the client failed or printed no result."""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "planelink"


def binary() -> Path:
    """The built client for the current source (building it when the cache has none)."""
    try:
        digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    except OSError as error:  # an installed bench package carries no Go source
        raise GoClientError(f"no source to build: {error}") from None
    built = cache_dir() / f"goclient-{digest}" / "goclient"
    if built.exists():
        return built
    go = shutil.which("go") or (str(_FALLBACK_GO) if _FALLBACK_GO.exists() else None)
    if go is None:
        raise GoClientError("no Go toolchain (`go` on $PATH or /usr/local/go/bin/go)")
    built.parent.mkdir(parents=True, exist_ok=True)
    # Built as envtest/build-kube-binaries.sh builds kube-apiserver (no cgo, -trimpath): the
    # standard library's packages are then in Go's build cache already, where a first build
    # would otherwise compile them all (minutes on a loaded machine).
    env = {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "GOPROXY": "off",
        "GOFLAGS": "-mod=mod",
        "CGO_ENABLED": "0",
    }
    with tempfile.TemporaryDirectory(dir=built.parent) as scratch:
        partial = Path(scratch) / "goclient"
        completed = subprocess.run(
            [go, "build", "-trimpath", "-o", str(partial), str(SOURCE)],
            cwd=SOURCE.parent,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise GoClientError(f"go build failed: {completed.stderr.strip()[-2000:]}")
        partial.replace(built)  # atomic: a concurrent build wins or loses whole
    return built


def argv(
    executable: Path,
    target: Target,
    path: str,
    *,
    concurrency: int,
    requests: int | None,
    duration: float | None,
    warmup_requests: int,
    warmup_seconds: float,
    http2: bool = False,
) -> list[str]:
    """The command line of one run of the client against `target`."""
    files = target.files
    if files is None:
        raise GoClientError(f"{target.name}: no credential files for a client in a process")
    args = [str(executable), "-url", target.base + path, "-ca", str(files.ca)]
    if files.cert is not None and files.key is not None:
        args += ["-cert", str(files.cert), "-key", str(files.key)]
    if files.token is not None:
        args += ["-token", files.token]
    args += ["-concurrency", str(concurrency)]
    if requests is not None:
        args += ["-requests", str(requests)]
    if duration is not None:
        args += ["-duration", f"{duration}s"]
    if warmup_requests:
        args += ["-warmup-requests", str(warmup_requests)]
    if warmup_seconds:
        args += ["-warmup", f"{warmup_seconds}s"]
    if http2:
        args.append("-http2")
    return args


def parse_result(document: dict[str, Any]) -> Load:
    """The client's JSON result as a `Load` (its own CPU as `cpu["client"]`)."""
    return Load(
        count=int(document["count"]),
        errors=int(document["errors"]),
        seconds=float(document["seconds"]),
        p50_ms=float(document["p50Ms"]),
        p99_ms=float(document["p99Ms"]),
        cpu={"client": float(document["cpuSeconds"])},
        first_error=document.get("firstError"),
    )


class GoDriver:
    """Go's net/http over HTTP/1.1, one connection per worker, in a process of its own; its CPU
    is what it reports of itself (getrusage over the measured window)."""

    suffix = " (go)"
    description = "Go net/http, HTTP/1.1, a connection per worker"
    plane = FAST

    def targets(self, stack: Stack) -> tuple[Target, Target]:
        return stack.through[FAST], stack.direct[FAST]

    async def load(
        self,
        target: Target,
        path: str,
        meter: CpuMeter,
        *,
        concurrency: int,
        requests: int | None = None,
        duration: float | None = None,
        warmup_requests: int = 0,
        warmup_seconds: float = 0.0,
    ) -> Load:
        executable = await asyncio.to_thread(binary)
        process = await asyncio.create_subprocess_exec(
            *argv(
                executable,
                target,
                path,
                concurrency=concurrency,
                requests=requests,
                duration=duration,
                warmup_requests=warmup_requests,
                warmup_seconds=warmup_seconds,
            ),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            result: dict[str, Any] | None = None
            while line := await process.stdout.readline():
                document = json.loads(line)
                if document.get("event") == "measuring":
                    meter.start()
                else:
                    meter.stop()  # the result is printed as soon as the window ends
                    result = document
            assert process.stderr is not None
            errors = (await process.stderr.read()).decode(errors="replace").strip()
            code = await process.wait()
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if code != 0 or result is None:
            raise GoClientError(f"{target.name}: goclient exited {code}: {errors[-1000:]}")
        load = parse_result(result)
        load.cpu |= meter.seconds
        return load
