"""The gateway: the hub in the control plane that agents dial and callers reach planes through.

Arrives with issue #4 (tunnel end to end) and #5 (reconciler). Depends on `protocol`, `certs`
and `crd`; never on `agent`.
"""
