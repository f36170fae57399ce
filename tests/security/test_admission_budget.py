"""The connection budget's decisions, byte-free: who is admitted, refused or evicted."""

from __future__ import annotations

import pytest

from gateway.admission import AdmissionSettings, ConnectionBudget, Refusal, fit_to_fd_limit


def budget(**limits: int) -> ConnectionBudget:
    return ConnectionBudget(AdmissionSettings(**limits))


def test_a_newcomer_evicts_the_oldest_unauthenticated_connection() -> None:
    ports = budget(max_unauthenticated=3)
    first, second, third = (ports.admit(f"10.0.0.{n}").slot for n in (1, 2, 3))
    decision = ports.admit("10.0.0.4")
    assert decision.slot is not None
    assert decision.evicted is first
    assert first is not None
    assert first.released
    assert ports.unauthenticated == 3
    assert ports.admit("10.0.0.5").evicted is second
    assert third is not None
    assert not third.released


def test_authenticated_connections_are_never_evicted_and_leave_the_anonymous_budget() -> None:
    ports = budget(max_connections=3, max_unauthenticated=2)
    agent = ports.admit("10.0.0.1").slot
    assert agent is not None
    ports.authenticate(agent)
    flood = [ports.admit(f"10.0.1.{n}") for n in range(10)]
    assert all(decision.evicted is not agent for decision in flood)
    assert not agent.released
    assert (ports.total, ports.unauthenticated) == (3, 2)


def test_at_the_global_limit_with_only_authenticated_connections_a_newcomer_is_refused() -> None:
    ports = budget(max_connections=2, max_unauthenticated=2)
    for address in ("10.0.0.1", "10.0.0.2"):
        slot = ports.admit(address).slot
        assert slot is not None
        ports.authenticate(slot)
    decision = ports.admit("10.0.0.3")
    assert decision.slot is None
    assert decision.refusal is Refusal.GLOBAL_LIMIT


def test_an_address_at_its_limit_is_refused_and_evicts_nobody() -> None:
    ports = budget(max_unauthenticated=3, max_unauthenticated_per_ip=2)
    other = ports.admit("10.0.0.9").slot
    ports.admit("10.0.0.1")
    ports.admit("10.0.0.1")
    decision = ports.admit("10.0.0.1")
    assert decision.slot is None
    assert decision.refusal is Refusal.PER_IP_LIMIT
    assert decision.evicted is None
    assert other is not None
    assert not other.released
    assert ports.admit("10.0.0.2").slot is not None  # another address still gets in


def test_release_is_idempotent_and_forgets_addresses() -> None:
    ports = budget()
    slot = ports.admit("10.0.0.1").slot
    assert slot is not None
    ports.release(slot)
    ports.release(slot)
    ports.authenticate(slot)  # too late: nothing changes
    assert (ports.total, ports.unauthenticated, ports.unauthenticated_from("10.0.0.1")) == (0, 0, 0)


def test_limits_are_fitted_below_the_file_descriptor_limit() -> None:
    wide = AdmissionSettings(max_connections=4096, max_unauthenticated=512)
    fitted, lowered = fit_to_fd_limit({"agent": wide, "caller": wide}, fd_limit=1024, reserve=256)
    assert lowered
    assert fitted["agent"].max_connections + fitted["caller"].max_connections <= 1024 - 256
    assert fitted["agent"].max_unauthenticated <= fitted["agent"].max_connections
    same, lowered = fit_to_fd_limit({"agent": wide}, fd_limit=1 << 20, reserve=256)
    assert not lowered
    assert same["agent"] == wide


@pytest.mark.parametrize(
    "field", ["max_connections", "max_unauthenticated", "max_unauthenticated_per_ip"]
)
def test_a_limit_below_one_is_refused(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        AdmissionSettings(**{field: 0})
