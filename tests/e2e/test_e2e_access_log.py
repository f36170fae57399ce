"""The access log on the real stack: one line per kubectl request at the gateway, and the same
request id in the agent's line for the stream and in kubectl's response headers."""

from __future__ import annotations

import re
import uuid

from structlog.testing import capture_logs
from structlog.typing import EventDict

from certs import PlaneRef
from tests.e2e.conftest import Lab
from tests.kit.waits import eventually, wait_for


async def test_a_kubectl_request_has_one_access_line_and_one_id_end_to_end(
    lab: Lab, planes: tuple[PlaneRef, PlaneRef]
) -> None:
    plane = planes[0]
    name = f"settings-{uuid.uuid4().hex[:8]}"
    created = await lab.direct(plane, "create", "configmap", name, "-n", "default")
    assert created.returncode == 0, created.stderr
    with capture_logs() as logs:
        # The agent's logger is bound when it starts: start it under the capture.
        await lab.local.stop_agent(plane)
        await lab.local.start_agent(plane)
        await wait_for(lab.local.wait_connected(plane), 30)
        # -v=8: kubectl prints each response's headers.
        got = await lab.kubectl(plane, "get", "configmap", name, "-n", "default", "-v=8")
        assert got.returncode == 0, got.stderr
        path = f"/api/v1/namespaces/default/configmaps/{name}"

        def mine() -> list[EventDict]:
            return [line for line in logs if line["event"] == "access" and line["path"] == path]

        await eventually(lambda: len(mine()) == 1, within=10, message="the access line")
    (line,) = mine()
    assert {key: line[key] for key in ("verb", "resource", "namespace", "name", "status")} == {
        "verb": "get",
        "resource": "configmaps",
        "namespace": "default",
        "name": name,
        "status": 200,
    }
    assert line["plane"] == str(plane)
    assert line["caller"]
    assert line["auth"] == "certificate"
    assert isinstance(line["bytes_out"], int)
    assert line["bytes_out"] > 0
    request_id = line["request_id"]
    agent_lines = [
        entry
        for entry in logs
        if entry["event"] == "upstream answered" and entry.get("request_id") == request_id
    ]
    assert len(agent_lines) == 1
    assert agent_lines[0]["path"] == path
    assert agent_lines[0]["status"] == 200
    shown = re.findall(r"Planelink-Request-Id: ([0-9a-f-]+)", got.stderr)
    assert request_id in shown
    # Every request kubectl made has its own id.
    assert len(set(shown)) == len(shown)
