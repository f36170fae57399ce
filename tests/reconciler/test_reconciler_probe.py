"""The probe's policy, against a stand-in for the gateway's direct planes: which paths it asks
for, how it judges each answer, and how a plane that does not answer reads in `Connected`."""

from __future__ import annotations

import asyncio

from certs import PlaneRef, plane_ref
from gateway.interfaces import DirectCredentials, PlaneAnswer, PlaneUnreachable
from gateway.reconciler.direct import probe

PLANE = plane_ref("org", "prod")
SERVER = "https://api.prod.example:6443"


class Planes:
    """Answers each path with a status, or fails it with a PlaneUnreachable; records asks."""

    def __init__(self, answers: dict[str, int | PlaneUnreachable | None]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    def set(self, plane: PlaneRef, credentials: DirectCredentials) -> bool:
        raise AssertionError("the probe never changes a plane")

    def remove(self, plane: PlaneRef) -> bool:
        raise AssertionError("the probe never changes a plane")

    def serves(self, plane: PlaneRef) -> bool:
        return True

    async def fetch(self, plane: PlaneRef, path: str, *, limit: float) -> PlaneAnswer:
        self.asked.append(path)
        answer = self.answers[path]
        if answer is None:
            await asyncio.Event().wait()  # never answers
        if isinstance(answer, PlaneUnreachable):
            raise answer
        assert isinstance(answer, int)
        return PlaneAnswer(url=SERVER + path, status=answer, body=f"said {answer}")


async def test_readyz_answers_and_version_is_not_asked() -> None:
    planes = Planes({"/readyz": 200})
    result = await probe(planes, PLANE, limit=5)
    assert (result.ok, result.reason) == (True, "ProbeSucceeded")
    assert result.message.startswith(f"GET {SERVER}/readyz: 200 in ")
    assert planes.asked == ["/readyz"]


async def test_readyz_not_offered_then_version_decides() -> None:
    for status in (403, 404):
        planes = Planes({"/readyz": status, "/version": 401})
        result = await probe(planes, PLANE, limit=5)
        assert (result.ok, result.reason) == (False, "Unauthorized")
        assert result.message == f"GET {SERVER}/version: 401: said 401"
        assert planes.asked == ["/readyz", "/version"]


async def test_other_statuses_are_a_server_not_ready() -> None:
    result = await probe(Planes({"/readyz": 500}), PLANE, limit=5)
    assert (result.ok, result.reason) == (False, "ServerNotReady")


async def test_a_plane_that_does_not_answer() -> None:
    for kind, reason in (("tls", "TLSError"), ("timeout", "Timeout"), ("connect", "Unreachable")):
        failure = PlaneUnreachable(kind, f"{SERVER}: it failed")
        result = await probe(Planes({"/readyz": failure}), PLANE, limit=5)
        assert (result.ok, result.reason, result.message) == (False, reason, failure.message)
    silent = await probe(Planes({"/readyz": None}), PLANE, limit=0.01)
    assert (silent.ok, silent.reason) == (False, "Timeout")
