"""The scale model's Lease size is the gateway's, and its verdict follows its limits."""

from __future__ import annotations

from bench.scale_model import ANNOTATIONS_LIMIT, Inputs, json_encoder, model, realistic_planes
from certs import parse_plane_ref
from gateway.reconciler.presence import advertise_agents


def test_the_model_encodes_a_lease_as_the_gateway_does() -> None:
    planes = realistic_planes(50, 2)
    advertised = advertise_agents(
        {parse_plane_ref(name): frozenset(ids) for name, ids in planes.items()},
        max_ids=16,
        max_bytes=ANNOTATIONS_LIMIT,
    )
    assert advertised.text == json_encoder(planes)


def test_ten_thousand_planes_outgrow_one_lease_and_a_thousand_do_not() -> None:
    large = model(Inputs(planes=10_000, replicas=5))
    assert large.annotation_bytes > ANNOTATIONS_LIMIT
    assert large.verdict.startswith("breaks first at")
    assert "Lease annotation" in large.verdict
    small = model(Inputs(planes=1_000, replicas=5))
    assert small.annotation_bytes < ANNOTATIONS_LIMIT
    assert small.verdict.startswith("within every limit")
    assert small.tunnels_total == 5 * 1_000


def test_workers_multiply_tunnels_but_not_a_processes_share() -> None:
    one = model(Inputs(planes=2_000, replicas=2, workers=1))
    four = model(Inputs(planes=2_000, replicas=2, workers=4))
    assert four.tunnels_total == 4 * one.tunnels_total
    assert four.tunnels_per_replica == one.tunnels_per_replica
    assert four.lease_writes_per_second > one.lease_writes_per_second
