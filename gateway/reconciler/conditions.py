"""A DataPlane's conditions, computed from what was observed: pure functions, no I/O, no clock.

Three condition types are owned here (the rest of `status.conditions` is left as found):

- `GatewayProvisioned`: the gateway holds this plane's credentials (the agent client CA, or the
  direct-mode CA and client credentials) and they are usable;
- `Connected`: an agent tunnel is up (agent mode) or the last probe of the API server succeeded
  (direct mode);
- `Ready`: both; when not, the reason and message of the first one that is not True.

`merge_conditions` follows the Kubernetes convention: `lastTransitionTime` changes only when a
condition's status changes. `status_patch` answers None when writing would change nothing, so
a writer never sends no-op updates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from crd.names import CONNECTED, GATEWAY_PROVISIONED, READY
from gateway.interfaces import PlaneCondition

OWNED_TYPES: Final = (READY, CONNECTED, GATEWAY_PROVISIONED)

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Verdict:
    """One condition's status, reason and message, before it is stamped with times."""

    status: Status
    reason: str
    message: str

    @property
    def ok(self) -> bool:
        return self.status == "True"


@dataclass(frozen=True)
class ProbeResult:
    """The outcome of one probe of a directly reached API server."""

    ok: bool
    reason: str
    message: str


def provisioned() -> Verdict:
    return Verdict("True", "Provisioned", "the gateway holds this plane's credentials")


def not_provisioned(reason: str, message: str) -> Verdict:
    return Verdict("False", reason, message)


def connected_from_agents(count: int) -> Verdict:
    if count <= 0:
        return Verdict("False", "NoAgentConnected", "no agent is connected")
    noun = "agent" if count == 1 else "agents"
    return Verdict("True", "AgentConnected", f"{count} {noun} connected")


def connected_from_probe(result: ProbeResult | None) -> Verdict:
    if result is None:
        return Verdict("Unknown", "Probing", "the API server has not been probed yet")
    return Verdict("True" if result.ok else "False", result.reason, result.message)


def not_probed(reason: str) -> Verdict:
    return Verdict("Unknown", reason, "the API server is not probed: see GatewayProvisioned")


def ready(gateway: Verdict, connected: Verdict) -> Verdict:
    failing = [part for part in (gateway, connected) if not part.ok]
    if not failing:
        return Verdict("True", "Ready", connected.message)
    status: Status = "False" if any(p.status == "False" for p in failing) else "Unknown"
    return Verdict(status, failing[0].reason, failing[0].message)


def desired(gateway: Verdict, connected: Verdict) -> dict[str, Verdict]:
    """The three owned conditions, by type."""
    return {
        READY: ready(gateway, connected),
        CONNECTED: connected,
        GATEWAY_PROVISIONED: gateway,
    }


def merge_conditions(
    current: Sequence[Mapping[str, Any]],
    wanted: Mapping[str, Verdict],
    *,
    generation: int,
    now: datetime,
) -> list[dict[str, Any]]:
    """`current` with the `wanted` types set; other types kept, order kept, new ones appended."""
    stamp = rfc3339(now)
    merged: list[dict[str, Any]] = []
    seen: set[str] = set()
    for condition in current:
        kind = str(condition.get("type", ""))
        if kind in wanted and kind not in seen:
            merged.append(_stamped(kind, wanted[kind], condition, generation, stamp))
        elif kind not in wanted:
            merged.append(dict(condition))
        seen.add(kind)
    for kind, verdict in wanted.items():
        if kind not in seen:
            merged.append(_stamped(kind, verdict, None, generation, stamp))
    return merged


def _stamped(
    kind: str,
    verdict: Verdict,
    previous: Mapping[str, Any] | None,
    generation: int,
    stamp: str,
) -> dict[str, Any]:
    unchanged = (
        previous is not None
        and previous.get("status") == verdict.status
        and previous.get("lastTransitionTime")
    )
    return {
        "type": kind,
        "status": verdict.status,
        "reason": verdict.reason,
        "message": verdict.message,
        "lastTransitionTime": previous["lastTransitionTime"] if unchanged and previous else stamp,
        "observedGeneration": generation,
    }


def status_patch(
    current_status: Mapping[str, Any] | None,
    wanted: Mapping[str, Verdict],
    *,
    generation: int,
    now: datetime,
) -> dict[str, Any] | None:
    """The new `status` to write, or None if the current one already says the same."""
    status = current_status or {}
    current = status.get("conditions") or []
    conditions = merge_conditions(current, wanted, generation=generation, now=now)
    if conditions == current and status.get("observedGeneration") == generation:
        return None
    return {"observedGeneration": generation, "conditions": conditions}


def condition(status: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    """The condition of type `kind` in a status, if present."""
    for item in (status or {}).get("conditions") or []:
        if item.get("type") == kind:
            found: Mapping[str, Any] = item
            return found
    return None


def held(status: Mapping[str, Any] | None) -> list[PlaneCondition]:
    """The owned conditions a status holds now, in `OWNED_TYPES` order, for the console."""
    found = {kind: condition(status, kind) for kind in OWNED_TYPES}
    return [
        PlaneCondition(
            type=kind,
            status=str(item.get("status", "Unknown")),
            reason=str(item.get("reason", "")),
            message=str(item.get("message", "")),
            last_transition=str(item.get("lastTransitionTime", "")),
        )
        for kind, item in found.items()
        if item is not None
    ]


def rfc3339(moment: datetime) -> str:
    """Seconds precision, UTC, `Z`: the form metav1.Time round-trips unchanged."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
