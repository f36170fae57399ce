"""Pure parts of the agent: backoff arithmetic, settings from flags and environment, files that
are re-read when they change. No sockets, no event loop."""

from __future__ import annotations

import argparse
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent import AgentSettings, Reconnect
from kubeproxy import (
    UpstreamConfigError,
    UpstreamCredentialsError,
    WatchedFile,
    load_in_cluster,
    load_kubeconfig,
)
from planelink.agent_cli import add_agent_parser, settings_from
from protocol.backoff import Backoff, BackoffPolicy


def _backoff(*, base: float, cap: float, random: Callable[[], float] | None = None) -> Backoff:
    return Backoff(BackoffPolicy(base=base, cap=cap), random=random)


# -- backoff --------------------------------------------------------------------------------


def test_reconnect_resets_dials_on_a_tunnel_and_backs_off_from_tunnels_that_drop() -> None:
    reconnect = Reconnect(base=1.0, cap=60.0, reset_after=30.0, random=lambda: 1.0)
    assert [reconnect.after_failed_dial() for _ in range(3)] == [1.0, 2.0, 4.0]
    reconnect.tunnel_up()  # a gateway that accepts the agent: dial failures start afresh
    assert reconnect.after_failed_dial() == 1.0
    # A gateway that accepts and drops at once is backed off from, tunnel after tunnel...
    delays = []
    for _ in range(4):
        reconnect.tunnel_up()
        delays.append(reconnect.after_tunnel(up_for=0.1))
    assert delays == [1.0, 2.0, 4.0, 8.0]
    # ...until one stays up long enough.
    reconnect.tunnel_up()
    assert reconnect.after_tunnel(up_for=30.0) == 1.0
    assert reconnect.after_failed_dial(retry_after=3) == 4.5  # 3 s, and half again at most
    # Refused after a tunnel ended (a restarting gateway): retried promptly for a while (30 s
    # of delays, 4 s apart at most), then the ceiling grows again.
    refused = [reconnect.after_failed_dial() for _ in range(11)]
    assert refused == [1.0, 2.0, *([4.0] * 7), 8.0, 16.0]


def test_retry_after_is_honoured_within_bounds_and_counts_no_failure() -> None:
    backoff = _backoff(base=0.5, cap=10.0, random=lambda: 1.0)
    assert backoff.retry_after(2) == pytest.approx(3.0)  # 2 s, plus up to half again
    assert backoff.retry_after(0) == pytest.approx(0.75)  # never sooner than base
    assert backoff.retry_after(3600) == 10.0  # never later than cap
    assert backoff.attempt == 0


def test_ceiling_doubles_from_base_up_to_cap() -> None:
    backoff = _backoff(base=0.5, cap=10.0, random=lambda: 1.0)
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff.attempt == 8


def test_full_jitter_draws_uniformly_below_the_ceiling() -> None:
    draws = itertools.cycle([0.0, 0.25, 0.999])
    backoff = _backoff(base=1.0, cap=60.0, random=lambda: next(draws))
    assert backoff.next_delay() == 0.0  # full jitter: an immediate retry is possible
    assert backoff.next_delay() == pytest.approx(0.5)  # 0.25 of a 2 s ceiling
    assert backoff.next_delay() == pytest.approx(3.996)  # just under the 4 s ceiling


def test_reset_starts_again_from_base() -> None:
    backoff = _backoff(base=1.0, cap=60.0, random=lambda: 0.5)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    assert backoff.next_delay() == 0.5


def test_huge_attempt_counts_stay_at_the_cap() -> None:
    backoff = _backoff(base=1.0, cap=30.0, random=lambda: 1.0)
    assert backoff.ceiling(10_000) == 30.0


def test_default_random_spreads_agents_out() -> None:
    # A thousand agents failing at once: their first retries are spread over the ceiling.
    delays = [_backoff(base=8.0, cap=60.0).next_delay() for _ in range(1000)]
    assert 0.0 <= min(delays) < 1.0
    assert 7.0 < max(delays) < 8.0
    assert len({round(delay, 3) for delay in delays}) > 900


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="base <= cap"):
        _backoff(base=5.0, cap=1.0)


# -- settings -------------------------------------------------------------------------------

_REQUIRED = {"gateway_url": "wss://gw.example.com", "plane": "org/prod"}


def _from_sources(flags: list[str], environ: dict[str, str]) -> AgentSettings:
    """Settings as `planelink agent` builds them from its flags and the environment."""
    parser = argparse.ArgumentParser()
    add_agent_parser(parser.add_subparsers())
    return settings_from(parser.parse_args(["agent", *flags]), environ)


def test_flags_win_over_environment_which_wins_over_defaults() -> None:
    settings = _from_sources(
        ["--gateway-url", "wss://flag.example.com"],
        {
            "PLANELINK_GATEWAY_URL": "wss://env.example.com",
            "PLANELINK_PLANE": "org/prod",
            "PLANELINK_HEARTBEAT_TIMEOUT": "45",
        },
    )
    assert settings.gateway_url == "wss://flag.example.com"
    assert settings.plane == "org/prod"
    assert settings.heartbeat_timeout == 45.0
    assert settings.backoff_cap == 60.0


def test_http2_upstream_is_on_unless_turned_off_by_flag_or_environment() -> None:
    assert _from_sources([], _env(_REQUIRED)).upstream_http2
    assert not _from_sources(["--no-upstream-http2"], _env(_REQUIRED)).upstream_http2
    off = {**_env(_REQUIRED), "PLANELINK_UPSTREAM_HTTP2": "false"}
    assert not _from_sources([], off).upstream_http2
    assert _from_sources(["--upstream-http2"], off).upstream_http2  # the flag wins


def test_bad_values_name_their_source() -> None:
    with pytest.raises(ValueError, match="PLANELINK_BACKOFF_BASE"):
        _from_sources([], {**_env(_REQUIRED), "PLANELINK_BACKOFF_BASE": "soon"})
    with pytest.raises(ValueError, match="--heartbeat-interval"):
        _from_sources(["--heartbeat-interval", "x"], _env(_REQUIRED))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gateway_url": ""}, "gateway URL is required"),
        ({"gateway_url": "https://gw.example.com"}, "must be wss://"),
        ({"gateway_url": "wss://gw.example.com/?x=1"}, "query"),
        ({"plane": "prod"}, "plane 'prod'"),
        ({"plane": "Org/prod"}, "plane 'Org/prod'"),
        ({"heartbeat_interval": 30.0, "heartbeat_timeout": 10.0}, "interval < timeout"),
        ({"backoff_base": 0.0}, "0 < base"),
        ({"drain_grace": 0.0}, "drain_grace must be positive"),
        ({"health_address": "nowhere"}, "health address"),
    ],
)
def test_invalid_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        AgentSettings(**{**_REQUIRED, **overrides})


def test_derived_values() -> None:
    settings = AgentSettings(
        gateway_url="wss://gw.example.com:8443/",
        plane="org/prod",
        tls_dir=Path("/tls"),
        gateway_ca=Path("/other/ca.pem"),
        health_address=":9090",
    )
    assert settings.connect_url == "wss://gw.example.com:8443/agent/v1/connect?plane=org/prod"
    assert settings.client_cert_file == Path("/tls/tls.crt")
    assert settings.client_key_file == Path("/tls/tls.key")
    assert settings.gateway_ca_file == Path("/other/ca.pem")
    assert settings.health_host_port == (None, 9090)
    with pytest.raises(TypeError):
        AgentSettings("wss://gw.example.com", "org/prod")  # type: ignore[call-arg]  # keyword-only, as tested


def test_agent_id_defaults_to_the_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOSTNAME", "agent-7d9f-x2")
    monkeypatch.delenv("POD_NAME", raising=False)
    settings = AgentSettings(gateway_url="wss://gw.example.com", plane="org/prod")
    assert settings.agent_id == "agent-7d9f-x2"


def _env(values: dict[str, str]) -> dict[str, str]:
    return {f"PLANELINK_{key.upper()}": value for key, value in values.items()}


# -- files re-read when they change ---------------------------------------------------------


def test_watched_file_rereads_on_change_and_when_old(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("one")
    now = [0.0]
    watched = WatchedFile(path, max_age=60.0, clock=lambda: now[0])
    assert watched.read() == b"one"

    staging = tmp_path / "token.new"
    staging.write_text("two")
    staging.replace(path)  # a new inode, as the kubelet's symlink swap gives
    assert watched.read() == b"two"

    # Same inode, size and mtime (a write the stat cannot see): caught by age.
    stat = path.stat()
    path.write_text("six")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert watched.read() == b"two"
    now[0] = 61.0
    assert watched.read() == b"six"


def test_watched_file_keeps_the_last_copy_while_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("kept")
    watched = WatchedFile(path)
    assert watched.read() == b"kept"
    path.unlink()
    assert watched.read() == b"kept"
    with pytest.raises(UpstreamCredentialsError):
        WatchedFile(tmp_path / "missing").read()


# -- upstream configuration errors ----------------------------------------------------------


def test_in_cluster_needs_the_service_environment(tmp_path: Path) -> None:
    with pytest.raises(UpstreamConfigError, match="KUBERNETES_SERVICE_HOST"):
        load_in_cluster(tmp_path, {})
    with pytest.raises(UpstreamConfigError, match="token"):
        load_in_cluster(
            tmp_path, {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
        )


def test_kubeconfig_problems_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        "clusters: [{name: k, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
        "users: [{name: u, user: {exec: {command: aws}}}]\n"
    )
    with pytest.raises(UpstreamConfigError, match="exec"):
        load_kubeconfig(path)
    with pytest.raises(UpstreamConfigError, match="no context named 'other'"):
        load_kubeconfig(path, context="other")
    with pytest.raises(UpstreamConfigError, match="cannot read"):
        load_kubeconfig(tmp_path / "absent")
