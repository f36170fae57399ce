"""Server TLS contexts whose failed handshakes tell the client why, with a TLS alert.

asyncio's TLS layer drops a failed server-side handshake without sending the alert OpenSSL
wrote for it: a client whose certificate is refused sees a bare EOF (kubectl retries for a
minute, then prints `EOF`) instead of `unknown certificate authority`; so does uvloop's. A
`ServerTlsContext` hands out TLS objects that, when their handshake fails, write the pending
alert to a duplicate of the connection's socket (`tunnel.tls_alerts.alerts_to_socket`, named
per connection around `loop.connect_accepted_socket`: both loops create the TLS object in a
callback that runs in the calling task's context), which the loop does not close.

The other direction is read here too: a client that does not trust the gateway's certificate
aborts the handshake with an alert (`untrusted_by_peer`), which is the gateway's certificate or
the client's CA to mend, not a client to refuse.

This module only adds and reads alerts: it never decides whether a handshake succeeds.
"""

from __future__ import annotations

import ssl

from tunnel import tls_alerts


class ServerTlsContext(tls_alerts.AlertingTlsContext):
    """`ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)` whose failed handshakes send their alert."""

    def __new__(cls) -> ServerTlsContext:
        return super().__new__(cls, ssl.PROTOCOL_TLS_SERVER)


# What OpenSSL names the alerts a client sends when it refuses the server's certificate.
_DISTRUST_ALERTS = (
    "ALERT_UNKNOWN_CA",
    "ALERT_BAD_CERTIFICATE",
    "ALERT_CERTIFICATE_EXPIRED",
    "ALERT_CERTIFICATE_UNKNOWN",
    "ALERT_UNSUPPORTED_CERTIFICATE",
    "ALERT_CERTIFICATE_REVOKED",
)

_TRUST_HINTS = {
    "agent": "the agent's --gateway-ca / PLANELINK_GATEWAY_CA / agent chart value "
    "gatewayCA.secretName (default: the ca.crt of its tls.secretName)",
    "caller": "the certificate-authority(-data) of the caller's kubeconfig "
    "(planelink kubeconfig --ca-cert)",
    "peer": "the other replicas' --peer-ca / chart value peers.secretName",
}


def untrusted_by_peer(error: BaseException, *, port: str) -> str | None:
    """If `error` is a failed server handshake because the client refused the gateway's
    certificate (its alert), a detail for the log naming the alert and what to fix; else
    None."""
    reason = getattr(error, "reason", None) if isinstance(error, ssl.SSLError) else None
    if not reason or not any(alert in reason for alert in _DISTRUST_ALERTS):
        return None
    alert = reason.split("ALERT_", 1)[1].lower()
    where = _TRUST_HINTS.get(port, "the client's trusted CAs")
    return (
        f"the {port} aborted the TLS handshake with alert {alert}: it does not accept the "
        f"gateway's certificate (issued by a CA it does not trust, expired, or not for the name "
        f"it dialled); give it the CA that issued the gateway's certificate in {where}, or "
        "re-issue the gateway's certificate for the name it dials"
    )
