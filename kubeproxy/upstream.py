"""Where the proxy sends requests — one API server — and how it authenticates there.

`Upstream` is the one target the proxy may reach: scheme, host, port, TLS trust and the
credentials the proxy adds to every request. The agent builds it from the in-cluster service
account (`load_in_cluster`) or from a kubeconfig (`load_kubeconfig`); the gateway builds it from
a direct-mode plane's resolved credentials (CA, client certificate, token).
Nothing a request carries can change it: requests are sent to this host and port, with the
proxy's own `Host`.

A projected service-account token rotates (the kubelet rewrites it about hourly), so a token
file is re-read when the file changes and at least every minute; the cluster CA file likewise.
"""

from __future__ import annotations

import base64
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import structlog

_MAX_FILE_AGE = 60.0  # seconds a file's content is trusted without a re-read


class UpstreamConfigError(Exception):
    """The API server cannot be configured (no in-cluster environment, bad kubeconfig)."""


class UpstreamCredentialsError(Exception):
    """A credential file could not be read now (and none was read before)."""


class WatchedFile:
    """A file's content, re-read when the file changes or when the copy is `max_age` old.

    A change is any difference in (inode, size, mtime): the kubelet swaps a symlink to update
    a projected volume, and an editor or `mv` replaces the inode.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_age: float = _MAX_FILE_AGE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._max_age = max_age
        self._clock = clock
        self._signature: tuple[int, int, int] | None = None
        self._read_at = 0.0
        self._content: bytes | None = None

    def read(self) -> bytes:
        """The current content; the last good copy if the file is briefly unreadable."""
        try:
            stat = self.path.stat()
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            stale = self._clock() - self._read_at >= self._max_age
            if self._content is None or signature != self._signature or stale:
                self._content = self.path.read_bytes()
                self._signature = signature
                self._read_at = self._clock()
        except OSError as error:
            if self._content is None:
                raise UpstreamCredentialsError(f"cannot read {self.path}: {error}") from None
            structlog.get_logger().warning(
                "credential file unreadable, using the last copy", path=str(self.path)
            )
        return self._content


class TLSSource(Protocol):
    """What gives the SSL context for each new connection to the API server; `alpn`: the
    protocols offered in ALPN (none by default: HTTP/1.1 without negotiation)."""

    def context(self, alpn: tuple[str, ...] = ()) -> ssl.SSLContext: ...


class TLSSettings:
    """Builds the SSL context for the API server, again whenever the CA file changes."""

    def __init__(
        self,
        *,
        ca_data: bytes | None,
        ca_file: WatchedFile | None,
        client_cert_pem: bytes | None,
        client_key_pem: bytes | None,
        insecure: bool = False,
    ) -> None:
        self._ca_data = ca_data
        self._ca_file = ca_file
        self._client = (client_cert_pem, client_key_pem)
        self._insecure = insecure
        self._built_for: bytes | None = None
        self._contexts: dict[tuple[str, ...], ssl.SSLContext] = {}
        """One context per ALPN offer: a context's ALPN list is part of it, and the HTTP/1.1
        pool must never offer h2 (it could not speak it)."""

    def context(self, alpn: tuple[str, ...] = ()) -> ssl.SSLContext:
        ca = self._ca_file.read() if self._ca_file is not None else self._ca_data
        if ca != self._built_for:
            self._contexts.clear()
            self._built_for = ca
        context = self._contexts.get(alpn)
        if context is None:
            context = _build_context(ca, self._client, insecure=self._insecure)
            if alpn:
                context.set_alpn_protocols(list(alpn))
            self._contexts[alpn] = context
        return context


def _build_context(
    ca: bytes | None, client: tuple[bytes | None, bytes | None], *, insecure: bool
) -> ssl.SSLContext:
    try:
        # A given CA is the only one trusted (as kubectl does): the system's public CAs are
        # loaded only when there is none, so no public certificate can stand in for the server.
        if ca is not None and not insecure:
            context = ssl.create_default_context(cadata=ca.decode("ascii"))
        else:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        cert_pem, key_pem = client
        if cert_pem is not None and key_pem is not None:
            # ssl loads a certificate chain only from files: write a private copy briefly.
            with tempfile.TemporaryDirectory(prefix="planelink-upstream-") as folder:
                cert_path, key_path = Path(folder, "tls.crt"), Path(folder, "tls.key")
                cert_path.write_bytes(cert_pem)
                key_path.touch(mode=0o600)
                key_path.write_bytes(key_pem)
                context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, ValueError) as error:
        raise UpstreamConfigError(f"TLS settings for the API server: {error}") from None
    return context


class Upstream:
    """The API server the proxy sends to; the only place requests may go."""

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int,
        base_path: str = "",
        server_hostname: str | None = None,
        tls: TLSSource | None = None,
        token: WatchedFile | str | None = None,
        source: str = "",
    ) -> None:
        if scheme not in {"https", "http"}:
            raise UpstreamConfigError(f"API server scheme {scheme!r} is not http or https")
        if scheme == "https" and tls is None:
            tls = TLSSettings(ca_data=None, ca_file=None, client_cert_pem=None, client_key_pem=None)
        self.scheme = scheme
        self.host = host
        self.port = port
        self.base_path = base_path.rstrip("/")
        self.server_hostname = server_hostname
        self._tls = tls if scheme == "https" else None
        self._token = token
        self.source = source

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.authority}{self.base_path}"

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def ssl_context(self, alpn: tuple[str, ...] = ()) -> ssl.SSLContext | None:
        """The TLS context for a new connection (None for plain http), offering `alpn`."""
        return self._tls.context(alpn) if self._tls is not None else None

    def authorization(self) -> bytes | None:
        """The `Authorization` value for the next request (None without a token).

        Raises UpstreamCredentialsError if the token file was never readable.
        """
        if self._token is None:
            return None
        token = self._token if isinstance(self._token, str) else self._token.read().decode()
        return b"Bearer " + token.strip().encode("latin-1")

    def __repr__(self) -> str:
        return f"Upstream({self.url} from {self.source})"


def load_in_cluster(root: Path, environ: Mapping[str, str]) -> Upstream:
    """The API server as a pod sees it: KUBERNETES_SERVICE_HOST/PORT, the mounted token
    and CA under `root` (normally /var/run/secrets/kubernetes.io/serviceaccount)."""
    host = environ.get("KUBERNETES_SERVICE_HOST")
    port = environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise UpstreamConfigError(
            "not running in a cluster (KUBERNETES_SERVICE_HOST/PORT are not set); "
            "pass --kubeconfig to reach an API server from elsewhere"
        )
    token_file = WatchedFile(root / "token")
    ca_file = WatchedFile(root / "ca.crt")
    try:
        token_file.read()
        ca_file.read()
        port_number = int(port)
    except (UpstreamCredentialsError, ValueError) as error:
        raise UpstreamConfigError(f"in-cluster configuration: {error}") from None
    tls = TLSSettings(ca_data=None, ca_file=ca_file, client_cert_pem=None, client_key_pem=None)
    upstream = Upstream(
        scheme="https", host=host, port=port_number, tls=tls, token=token_file, source=str(root)
    )
    upstream.ssl_context()  # fail now, at start, if the CA is unusable
    return upstream


def load_kubeconfig(path: Path, *, context: str | None = None) -> Upstream:
    """The API server of a kubeconfig's context (`context`, else its current-context).

    Supports server, certificate-authority(-data), insecure-skip-tls-verify,
    tls-server-name, token, tokenFile and client-certificate/-key(-data). Exec plugins,
    auth providers and basic auth are refused: the agent runs unattended.
    """
    # Here only: an agent in its cluster reads no YAML, and PyYAML is megabytes of its memory.
    import yaml  # noqa: PLC0415

    try:
        config = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UpstreamConfigError(f"cannot read kubeconfig {path}: {error}") from None
    if not isinstance(config, dict):
        raise UpstreamConfigError(f"kubeconfig {path} is not a mapping")
    base = path.parent
    name = context or config.get("current-context")
    if not name:
        raise UpstreamConfigError(f"kubeconfig {path} has no current-context; pass a context")
    ctx = _named(config, "contexts", "context", name, path)
    cluster = _named(config, "clusters", "cluster", ctx.get("cluster"), path)
    user = _named(config, "users", "user", ctx.get("user"), path) if ctx.get("user") else {}
    for unsupported in ("exec", "auth-provider", "username", "password"):
        if unsupported in user:
            raise UpstreamConfigError(
                f"kubeconfig user {ctx.get('user')!r} uses {unsupported!r}, which the agent "
                "does not support; use a token or a client certificate"
            )
    server = urlsplit(str(cluster.get("server", "")))
    if server.scheme not in {"https", "http"} or not server.hostname:
        raise UpstreamConfigError(f"kubeconfig context {name!r}: bad server {server.geturl()!r}")
    tls = TLSSettings(
        ca_data=_data_or_file(cluster, "certificate-authority", base),
        ca_file=None,
        client_cert_pem=_data_or_file(user, "client-certificate", base),
        client_key_pem=_data_or_file(user, "client-key", base),
        insecure=bool(cluster.get("insecure-skip-tls-verify", False)),
    )
    token: WatchedFile | str | None = user.get("token")
    if token is None and user.get("tokenFile"):
        token = WatchedFile(base / str(user["tokenFile"]))
    upstream = Upstream(
        scheme=server.scheme,
        host=server.hostname,
        port=server.port or (443 if server.scheme == "https" else 80),
        base_path=server.path,
        server_hostname=cluster.get("tls-server-name"),
        tls=tls,
        token=token,
        source=f"{path} context {name}",
    )
    upstream.ssl_context()  # fail now, at start, if the TLS material is unusable
    return upstream


def _named(config: dict[str, Any], section: str, key: str, name: Any, path: Path) -> Any:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            value = entry.get(key)
            return value if isinstance(value, dict) else {}
    raise UpstreamConfigError(f"kubeconfig {path} has no {key} named {name!r}")


def _data_or_file(section: dict[str, Any], key: str, base: Path) -> bytes | None:
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError as error:
            raise UpstreamConfigError(f"kubeconfig {key}-data is not base64: {error}") from None
    name = section.get(key)
    if name:
        try:
            return (base / str(name)).read_bytes()
        except OSError as error:
            raise UpstreamConfigError(f"kubeconfig {key}: {error}") from None
    return None
