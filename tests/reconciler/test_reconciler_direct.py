"""Direct-mode DataPlanes probed against a second real API server."""

from __future__ import annotations

import json

import certs
from envtest import KubeAPIServer
from envtest.pytest_plugin import ServerFactory
from gateway.direct import DirectPlanes
from gateway.reconciler import Reconciler
from tests.reconciler.conftest import Kit


async def test_bearer_token_and_mtls_and_a_wrong_token(
    reconciler: Reconciler, kit: Kit, kube_servers: ServerFactory
) -> None:
    server: KubeAPIServer = kube_servers("direct")
    ca = {"value": server.ca_file.read_text()}
    user = server.issue_user("planelink-prober", groups=["probers"])
    assert user.client_certificate_pem is not None
    assert user.client_key_pem is not None
    await kit.create(
        kit.client,
        kit.secret(
            "direct-creds",
            kit.namespace,
            {
                "token": server.admin_token.encode(),
                "tls.crt": user.client_certificate_pem,
                "tls.key": user.client_key_pem,
            },
        ),
    )
    token_ref = {"secretRef": {"name": "direct-creds", "key": "token"}}
    mtls = {
        "clientCert": {"secretRef": {"name": "direct-creds", "key": "tls.crt"}},
        "clientKey": {"secretRef": {"name": "direct-creds", "key": "tls.key"}},
    }
    await kit.create(
        kit.client,
        kit.direct_dataplane(
            "by-token", kit.namespace, server=server.url, ca=ca, auth={"bearerToken": token_ref}
        ),
    )
    await kit.create(
        kit.client,
        kit.direct_dataplane(
            "by-cert", kit.namespace, server=server.url, ca=ca, auth={"mtls": mtls}
        ),
    )
    await kit.create(
        kit.client,
        kit.direct_dataplane(
            "wrong-token",
            kit.namespace,
            server=server.url,
            ca=ca,
            auth={"bearerToken": {"value": "not-the-token"}},
        ),
    )

    for name in ("by-token", "by-cert"):
        obj = await kit.await_dataplane(
            kit.client, kit.namespace, name, kit.has_condition("Ready", "True")
        )
        connected = kit.required_condition(obj, "Connected")
        assert connected["reason"] == "ProbeSucceeded"
        assert connected["message"].startswith(f"GET {server.url}/readyz: 200")
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "wrong-token",
        kit.has_condition("Connected", "False", "Unauthorized"),
    )
    assert "401" in kit.required_condition(obj, "Connected")["message"]
    assert kit.has_condition("GatewayProvisioned", "True")(obj)
    assert kit.has_condition("Ready", "False", "Unauthorized")(obj)

    # Callers' requests go through the pool the probe went through: its connection is reused
    # (an HTTP/2 one: the API server offers h2).
    direct = reconciler.direct
    assert isinstance(direct, DirectPlanes)
    for name in ("by-token", "by-cert"):
        served = direct.backend(certs.plane_ref(kit.namespace, name))
        assert served is not None
        assert served.server == server.url
        assert served.h2_pool is not None
        opened_by_probe = served.h2_pool.opened
        assert opened_by_probe == 1
        stream = served.open_stream(
            method="GET",
            path="/api/v1/namespaces/default",
            headers=[(b"Accept", b"application/json")],
            end_stream=True,
            upgrade=False,
        )
        response = await stream.response()
        # The admin may read it; the certificate user is known but not authorised.
        assert response.status == (200 if name == "by-token" else 403)
        body = b""
        while piece := await stream.read():
            body += piece
        assert json.loads(body)["kind"] == ("Namespace" if name == "by-token" else "Status")
        assert stream.done
        assert served.h2_pool.opened == opened_by_probe
        assert served.pool.opened == 0


async def test_unreachable_server_and_unresolvable_credentials(
    reconciler: Reconciler, kit: Kit, kube_servers: ServerFactory
) -> None:
    server: KubeAPIServer = kube_servers("direct")
    ca = {"value": server.ca_file.read_text()}
    await kit.create(
        kit.client,
        kit.direct_dataplane(
            "nobody-home",
            kit.namespace,
            server="https://127.0.0.1:1",
            ca=ca,
            auth={"bearerToken": {"value": "t"}},
        ),
    )
    await kit.create(
        kit.client,
        kit.direct_dataplane(
            "no-token",
            kit.namespace,
            server=server.url,
            ca=ca,
            auth={"bearerToken": {"secretRef": {"name": "absent", "key": "token"}}},
        ),
    )
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "nobody-home",
        kit.has_condition("Connected", "False", "Unreachable"),
    )
    assert "127.0.0.1:1" in kit.required_condition(obj, "Connected")["message"]
    obj = await kit.await_dataplane(
        kit.client,
        kit.namespace,
        "no-token",
        kit.has_condition("GatewayProvisioned", "False", "SecretNotFound"),
    )
    assert kit.has_condition("Connected", "Unknown", "CredentialsUnavailable")(obj)
    assert kit.has_condition("Ready", "False", "SecretNotFound")(obj)
    assert not reconciler.direct.serves(certs.plane_ref(kit.namespace, "no-token"))
