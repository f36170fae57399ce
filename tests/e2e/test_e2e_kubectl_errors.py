"""What kubectl shows, and how soon, when the gateway cannot serve a plane: no agent, an
unknown plane, a gateway still starting, a plane that does not answer in time.

kubectl's discovery reads error answers raw and puts client-go's own words in place of the
gateway's message, and client-go obeys a 5xx's `Retry-After` up to ten times: each case checks
the gateway's message reaches stderr (as a `Warning:` line) and how long kubectl took. Every
kubectl here has a fresh discovery cache, so that its discovery requests (the worst case) run.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from certs import PlaneRef, plane_ref
from envtest import run_kubectl
from gateway.app import Gateway
from tests.e2e.conftest import Lab
from tests.kit.waits import scaled, wait_for

TRANSCRIPTS = "PLANELINK_KUBECTL_TRANSCRIPTS"
"""When set, a folder where each test leaves what kubectl printed (for release notes)."""


async def kubectl(
    kubeconfig: Path, cache: Path, *args: str, limit: float = 60
) -> tuple[subprocess.CompletedProcess[str], float]:
    """kubectl with a fresh discovery cache; its answer and how many seconds it took."""
    started = time.monotonic()
    done = await run_kubectl(kubeconfig, "--cache-dir", str(cache), *args, timeout=scaled(limit))
    return done, time.monotonic() - started


def transcript(
    name: str, args: tuple[str, ...], done: subprocess.CompletedProcess[str], seconds: float
) -> None:
    folder = os.environ.get(TRANSCRIPTS)
    if folder:
        shown = f"$ kubectl {' '.join(args)}\n{done.stderr}{done.stdout}"
        text = f"{shown}(exit {done.returncode}, {seconds:.1f} s)\n"
        (Path(folder) / f"{name}.txt").write_text(text)


def gateway_of(lab: Lab) -> Gateway:
    gateway = lab.local.gateway
    assert gateway is not None
    # Long after start-up: no plane's agents are expected back by now.
    gateway.trust.startup.agents_return_within = 0
    return gateway


def kubeconfig_for(lab: Lab, plane: PlaneRef, tmp_path: Path) -> Path:
    """A caller's kubeconfig for `plane`, which the gateway need not know."""
    known = next(iter(lab.servers))
    config = yaml.safe_load(lab.local.caller_kubeconfig(known).read_text())
    for cluster in config["clusters"]:
        server = cluster["cluster"]["server"]
        cluster["cluster"]["server"] = server.replace(
            f"/planes/{known.namespace}/{known.name}/", f"/planes/{plane.namespace}/{plane.name}/"
        )
    path = tmp_path / f"{plane.name}.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


async def test_no_agent_is_told_within_seconds(
    lab: Lab, planes: tuple[PlaneRef, PlaneRef], tmp_path: Path
) -> None:
    plane = planes[0]
    gateway = gateway_of(lab)
    await lab.local.stop_agent(plane)
    args = ("get", "pods")
    done, seconds = await kubectl(lab.local.caller_kubeconfig(plane), tmp_path, *args)
    transcript("no-agent", args, done, seconds)
    assert done.returncode != 0
    assert (
        f"Warning: no agent of dataplane {plane} is connected (the last one disconnected "
        in done.stderr
    )
    assert "check that the plane's agent is running and reaches the gateway" in done.stderr
    assert "Error from server (ServiceUnavailable)" in done.stderr
    assert "context deadline exceeded" not in done.stderr
    # At most the wait for a returning agent, then at once: not ten Retry-Afters per request.
    assert seconds < gateway.callers._settings.agent_wait + scaled(10)


async def test_kubectl_during_a_reconnect_completes_when_the_agent_is_back(
    lab: Lab, planes: tuple[PlaneRef, PlaneRef], tmp_path: Path
) -> None:
    plane = planes[0]
    gateway = gateway_of(lab)
    gateway.callers._settings = replace(gateway.callers._settings, agent_wait=scaled(20))
    await lab.local.stop_agent(plane)
    waiting = asyncio.create_task(
        kubectl(
            lab.local.caller_kubeconfig(plane),
            tmp_path,
            "get",
            "namespace",
            "default",
            "-o",
            "name",
        )
    )
    await lab.local.start_agent(plane)
    done, _ = await wait_for(waiting, 60)
    assert done.stdout.strip() == "namespace/default", done.stderr


async def test_an_unknown_plane_is_named_with_how_to_list_them(lab: Lab, tmp_path: Path) -> None:
    plane = plane_ref("org-a", "no-such-plane")
    args = ("get", "pods")
    done, seconds = await kubectl(kubeconfig_for(lab, plane, tmp_path), tmp_path, *args)
    transcript("unknown-plane", args, done, seconds)
    assert done.returncode != 0
    assert f"Warning: dataplane {plane} not found: " in done.stderr
    assert "kubectl get dataplanes -A" in done.stderr
    assert seconds < scaled(10)


async def test_kubectl_while_the_gateway_starts_waits_for_the_real_answer(
    lab: Lab, tmp_path: Path
) -> None:
    gateway = gateway_of(lab)
    plane = plane_ref("org-a", "no-such-plane")
    startup = gateway.trust.startup
    startup.wait_for("DataPlanes")
    try:
        args = ("get", "pods")
        running = asyncio.create_task(
            kubectl(kubeconfig_for(lab, plane, tmp_path), tmp_path, *args)
        )
        await asyncio.sleep(0)  # kubectl is on its way; the gateway loads its planes meanwhile
    finally:
        loop = asyncio.get_running_loop()
        loop.call_later(2, startup.loaded, "DataPlanes")
    done, seconds = await wait_for(running, 60)
    transcript("gateway-starting", args, done, seconds)
    # client-go retried the 503 (Retry-After: 1) until the gateway knew its planes: the
    # answer kubectl shows is the real one.
    assert f"Warning: dataplane {plane} not found: " in done.stderr
    assert "the gateway is starting" not in done.stderr
    assert seconds < scaled(20)


async def test_a_plane_that_does_not_answer_in_time_says_which_deadline(
    lab: Lab, planes: tuple[PlaneRef, PlaneRef], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = planes[1]
    gateway = gateway_of(lab)
    gateway.callers._settings = replace(gateway.callers._settings, request_timeout=2)

    async def never(*args: object, **kwargs: object) -> object:
        await asyncio.Event().wait()  # an API server that never answers
        raise AssertionError

    agent = lab.local.agent(plane)
    monkeypatch.setattr(agent.pool, "acquire", never)  # over HTTP/1.1
    monkeypatch.setattr(agent.h2_pool, "request", never)  # over HTTP/2
    args = ("get", "namespaces")
    done, seconds = await kubectl(lab.local.caller_kubeconfig(plane), tmp_path, *args)
    transcript("deadline", args, done, seconds)
    assert done.returncode != 0
    assert f"Warning: dataplane {plane} did not answer within 2s" in done.stderr
    assert "--request-timeout" in done.stderr
    assert seconds < scaled(30)
