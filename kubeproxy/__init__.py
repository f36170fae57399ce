"""Proxying tunnel streams to a Kubernetes API server: the agent's and the gateway's direct mode.

Depends on `tunnel`, `http1`, `protocol` and `certs`; never on `gateway` or `agent`. Typical use::

    upstream = load_kubeconfig(Path("kubeconfig"))      # or Upstream(...) with TLSSettings
    pool = ConnectionPool(upstream, metrics=metrics)
    proxy = Proxy(pool=pool, metrics=metrics, response_timeout=30.0)
    session = TunnelSession(channel, connection, request_handler=proxy.handle)

Modules: `upstream` (the API server: in-cluster, kubeconfig or given TLS and token), `pool`
(HTTP/1.1 connections to it), `h2pool` (HTTP/2 connections to it, for requests but upgrades),
`request` (what may go upstream), `proxy` (one tunnel stream), `local` (requests the proxy
serves in this process, without a tunnel: the gateway's direct mode), `metrics` (what the pool
and proxy count).
"""

from kubeproxy.h2pool import H2Exchange, H2Pool, H2ResponseHead, Http2NotOffered
from kubeproxy.local import LocalLimits, LocalProxy, LocalStream, LocalStreams
from kubeproxy.metrics import ProxyMetrics
from kubeproxy.pool import ConnectionPool, UpstreamConnection, UpstreamError
from kubeproxy.proxy import ProxiedStream, Proxy, ProxyStats
from kubeproxy.request import BadRequest, RequestPlan, plan_request
from kubeproxy.upstream import (
    TLSSettings,
    TLSSource,
    Upstream,
    UpstreamConfigError,
    UpstreamCredentialsError,
    WatchedFile,
    load_in_cluster,
    load_kubeconfig,
)

__all__ = [
    "BadRequest",
    "ConnectionPool",
    "H2Exchange",
    "H2Pool",
    "H2ResponseHead",
    "Http2NotOffered",
    "LocalLimits",
    "LocalProxy",
    "LocalStream",
    "LocalStreams",
    "ProxiedStream",
    "Proxy",
    "ProxyMetrics",
    "ProxyStats",
    "RequestPlan",
    "TLSSettings",
    "TLSSource",
    "Upstream",
    "UpstreamConfigError",
    "UpstreamConnection",
    "UpstreamCredentialsError",
    "UpstreamError",
    "WatchedFile",
    "load_in_cluster",
    "load_kubeconfig",
    "plan_request",
]
