"""Shared fixtures for the certs tests: one CA per session, since key generation is the slow part.

Bundles are frozen, so sharing them between tests is safe.
"""

from __future__ import annotations

import pytest

import certs


@pytest.fixture(scope="session")
def ca() -> certs.CertificateBundle:
    return certs.create_ca("planelink test CA")


@pytest.fixture(scope="session")
def other_ca() -> certs.CertificateBundle:
    return certs.create_ca("some other CA")


@pytest.fixture(scope="session")
def plane() -> certs.PlaneRef:
    return certs.plane_ref(namespace="my-org", name="prod")


@pytest.fixture(scope="session")
def agent(ca: certs.CertificateBundle, plane: certs.PlaneRef) -> certs.CertificateBundle:
    return certs.issue_agent(ca, plane=plane)
