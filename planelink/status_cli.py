"""``planelink status``: a table of the gateway's planes, read from its operator ``/planes``.

Read-only: it sends one GET to the operator port and never changes anything. Exit codes:
0 printed, 1 ``--fail-on-disconnected`` and some plane has no connected agent, 2 the gateway
could not be reached or did not answer with the ``/planes`` JSON (one line on stderr).

Wiring: ``add_status_parser(commands)`` registers ``status`` and sets ``run``
(``Callable[[argparse.Namespace], int]``). ``python -m planelink.status_cli ...`` runs it
standalone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubeobject.duration import format_duration
from planelink.settings import CommandSettings, Group, Setting

EXIT_OK = 0
EXIT_DISCONNECTED = 1
EXIT_UNREACHABLE = 2

ENV_GATEWAY = "PLANELINK_GATEWAY_OPERATOR_URL"
DEFAULT_GATEWAY = "http://127.0.0.1:8081"
NO_AGENT = "no agent connected"
COLUMNS = (
    "PLANE",
    "MODE",
    "AGENTS",
    "REPLICAS",
    "SINCE",
    "RTT",
    "STREAMS",
    "CERT EXPIRY",
    "LAST ERROR",
)

_PROG = "planelink status"
_SECONDS_PER_DAY = 86400

_DESCRIPTION = f"""\
Show the planes the gateway knows and the health of their agents, from the gateway's
operator endpoint /planes (port 8081 by default).

columns:
  PLANE        namespace/name of the DataPlane
  MODE         agent (an agent dials in) or direct (the gateway reaches the API server itself)
  AGENTS       agents connected now, to any live gateway replica (each counted once)
  REPLICAS     the gateway replicas the agents hold a tunnel to: "all N" when every agent
               holds one to each of the N live replicas, else per agent (agent: replicas)
  SINCE        how long the longest-connected agent has been connected
  RTT          heartbeat round trip of the slowest agent
  STREAMS      open streams (requests, watches, exec sessions) over all agents
  CERT EXPIRY  days until the soonest agent certificate expires
  LAST ERROR   the plane's configuration issues, or "{NO_AGENT}"
SINCE, RTT, STREAMS and CERT EXPIRY describe the tunnels of the replica that answered; with
several replicas a line after the table names it and the live ones.

exit codes: 0 ok; 1 with --fail-on-disconnected when a plane has no connected agent;
2 the gateway cannot be reached.

examples:
  planelink status --gateway http://gateway.planelink-system:8081
  {ENV_GATEWAY}=http://localhost:8081 planelink status -o json
  planelink status --fail-on-disconnected >/dev/null || echo "a plane is down"
"""


SETTINGS = CommandSettings(
    "PLANELINK_STATUS_",
    (
        Group(
            None,
            (
                Setting(
                    name="gateway",
                    env=ENV_GATEWAY,
                    metavar="URL",
                    default=DEFAULT_GATEWAY,
                    help="the gateway's operator URL",
                ),
            ),
        ),
    ),
)
"""The settings of `planelink status` that the environment can set too."""


class GatewayUnreachable(Exception):
    """The operator endpoint did not answer with the /planes JSON: one line, exit code 2."""


def add_status_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the ``status`` command on ``commands``."""
    parser = commands.add_parser(
        "status",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_arguments(parser)


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    SETTINGS.add_to(parser)
    parser.add_argument(
        "-o",
        "--output",
        choices=["table", "json"],
        default="table",
        help="table (default) or json: the /planes answer as the gateway sent it",
    )
    parser.add_argument(
        "--fail-on-disconnected",
        action="store_true",
        help="exit 1 when any plane has no connected agent (for scripts and probes)",
    )
    parser.add_argument(
        "--token-file",
        type=Path,
        metavar="PATH",
        help="a file holding the bearer token of a gateway run with --operator-token-file",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="give up on the gateway after this long (default 5)",
    )
    parser.set_defaults(run=run_status)


def run_status(args: argparse.Namespace) -> int:
    base = SETTINGS.resolve(args, os.environ).gateway
    try:
        token = args.token_file.read_text().strip() if args.token_file else None
        report = fetch_planes(base, timeout=args.timeout, token=token)
    except OSError as error:
        print(f"{_PROG}: cannot read the token file: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except GatewayUnreachable as error:
        print(f"{_PROG}: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.output == "json":
        print(json.dumps(report, indent=2))
    else:
        print(render_table(report["planes"], now=datetime.now(UTC), replicas=_live(report)))
        if len(_live(report)) > 1:
            print(f"\n{replicas_line(report)}")
    if args.fail_on_disconnected and any(
        p.get("connectedAgents", 0) == 0 for p in report["planes"]
    ):
        return EXIT_DISCONNECTED
    return EXIT_OK


def fetch_planes(base_url: str, *, timeout: float, token: str | None = None) -> dict[str, Any]:
    """GET ``<base_url>/planes`` (with the operator's bearer token if given); every way that
    can fail becomes :class:`GatewayUnreachable`."""
    url = base_url.rstrip("/") + "/planes"
    if not url.startswith(("http://", "https://")):
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: not an http(s) URL")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 - checked above
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310
            body = answer.read()
    except urllib.error.HTTPError as error:
        hint = " (it demands a bearer token: --token-file)" if error.code == 401 else ""
        message = f"the gateway at {url} answered HTTP {error.code}{hint}"
        raise GatewayUnreachable(message) from error
    except urllib.error.URLError as error:
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: {error.reason}") from error
    except (OSError, ValueError) as error:
        raise GatewayUnreachable(f"cannot reach the gateway at {url}: {error}") from error
    try:
        report = json.loads(body)
    except ValueError as error:
        raise GatewayUnreachable(f"the gateway at {url} did not answer JSON: {error}") from error
    if not isinstance(report, dict) or not isinstance(report.get("planes"), list):
        raise GatewayUnreachable(f"the gateway at {url} answered without a 'planes' list")
    return report


# --- the table ---------------------------------------------------------------------------------


def render_table(
    planes: Sequence[dict[str, Any]], *, now: datetime, replicas: Sequence[str] = ()
) -> str:
    """The planes as aligned columns, one row per plane, sorted by namespace/name; `replicas`
    are the live replicas' ids (the /planes answer's `replicas`)."""
    rows = [
        COLUMNS,
        *(plane_row(p, now=now, replicas=replicas) for p in sorted(planes, key=_plane_name)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def plane_row(
    plane: dict[str, Any], *, now: datetime, replicas: Sequence[str] = ()
) -> tuple[str, ...]:
    agents: list[dict[str, Any]] = plane.get("agents") or []
    connected_at = [_parse_time(a.get("connectedAt")) for a in agents]
    rtts = [a["rttSeconds"] for a in agents if isinstance(a.get("rttSeconds"), int | float)]
    expiries = [_parse_time((a.get("certificate") or {}).get("notAfter")) for a in agents]
    since = [t for t in connected_at if t is not None]
    expires = [t for t in expiries if t is not None]
    issues = [str(i) for i in plane.get("issues") or []]
    if not plane.get("connectedAgents"):
        issues.append(NO_AGENT)
    return (
        _plane_name(plane),
        str(plane.get("mode", "?")),
        str(plane.get("connectedAgents", len(agents))),
        replicas_cell(plane, replicas),
        format_duration((now - min(since)).total_seconds()) if since else "-",
        f"{max(rtts) * 1000:.1f}ms" if rtts else "-",
        str(sum(int(a.get("openStreams") or 0) for a in agents)) if agents else "-",
        format_expiry((min(expires) - now).total_seconds()) if expires else "-",
        "; ".join(issues) or "-",
    )


def replicas_cell(plane: dict[str, Any], replicas: Sequence[str]) -> str:
    """Which replicas the plane's agents hold a tunnel to: "all N" once every agent holds one
    to each live replica (converged), else `agent: replica,replica; ...`; "-" without agents
    (or from a gateway that does not say)."""
    holdings = plane.get("agentReplicas")
    if not isinstance(holdings, list):
        return "-"
    held = [
        (str(entry.get("agentId", "?")), [str(r) for r in entry.get("replicas") or []])
        for entry in holdings
        if isinstance(entry, dict)
    ]
    if not held:
        return "-"
    if replicas and all(set(ids) >= set(replicas) for _, ids in held):
        return f"all {len(replicas)}"
    return "; ".join(f"{agent}: {','.join(ids)}" for agent, ids in held)


def replicas_line(report: dict[str, Any]) -> str:
    """The replica that answered and the live ones, in one line."""
    live = _live(report)
    return f"live replicas ({len(live)}): {', '.join(live)}; answered by {report.get('replica')}"


def _live(report: dict[str, Any]) -> list[str]:
    replicas = report.get("replicas")
    return [str(r) for r in replicas] if isinstance(replicas, list) else []


def format_expiry(seconds: float) -> str:
    if seconds <= 0:
        return "expired"
    return f"{int(seconds // _SECONDS_PER_DAY)}d"


def _plane_name(plane: dict[str, Any]) -> str:
    return f"{plane.get('namespace', '?')}/{plane.get('name', '?')}"


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=_PROG, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
