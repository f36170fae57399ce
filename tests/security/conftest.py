"""The security suite: hostile agents and callers against a real gateway.

The in-process gateway lab of `tests/gateway` (a PKI, a loopback gateway with planes A and B,
stand-in agents, an authenticated caller) serves here too; each topic's own fixtures live in
its test module.
"""

from tests.gateway.conftest import (  # noqa: F401 - fixtures
    caller,
    connect_agent,
    gateway,
    pki,
    planes,
)
