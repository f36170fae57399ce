"""The agent: runs in each data-plane cluster, dials out to the gateway, proxies to its API server.

Arrives with issue #4. Depends on `protocol` and `certs`; never on `gateway`.
"""
