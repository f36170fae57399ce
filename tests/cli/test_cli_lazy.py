"""`planelink <command>` loads only that command's modules, and `planelink --help` none of
them: an agent starts without the gateway's dependencies (kubernetes_asyncio alone is a second
of imports), and a new user's first `planelink --help` answers at once."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import pytest

from planelink.cli import _COMMANDS, _command_in, build_parser
from tests.kit.waits import scaled

PROBE = """
import sys
from planelink.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
print(sorted(name for name, module in sys.modules.items() if module is not None))
"""

HEAVY = (
    "aiohttp",
    "certs",
    "crd",
    "cryptography",
    "envtest",
    "gateway",
    "kubernetes_asyncio",
    "prometheus_client",
    "pydantic",
    "rich",
    "structlog",
    "websockets",
    "yaml",
)
"""What `planelink --help` must not import: the roles, their libraries, and structlog's
renderers (which pull in rich)."""

HELP_BUDGET = 0.5
"""Seconds `planelink --help` may take on an idle machine (scaled for a loaded one)."""


def _imported_by(argv: list[str]) -> list[str]:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(60),
    )
    loaded: list[str] = eval(probe.stdout.strip().splitlines()[-1])  # noqa: S307 - our own repr
    return loaded


def _help(*argv: str) -> str:
    """What `planelink *argv` prints (it must succeed)."""
    return subprocess.run(
        [sys.executable, "-m", "planelink", *argv],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(60),
    ).stdout


def _packages(modules: list[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["--help"], HEAVY),
        (["nonsense"], HEAVY),
        # An agent reads its TLS files with certs.der: cryptography is for a wrong one.
        (["agent", "--help"], ("cryptography", "envtest", "gateway", "kubernetes_asyncio")),
        (["certs", "--help"], ("envtest", "gateway", "kubernetes_asyncio")),
        (["--log-level", "warning", "status", "--help"], ("gateway", "kubernetes_asyncio")),
        # Its flags, and its refusals (state folder in use, port taken), answer at once.
        (["dev", "--help"], ("crd", "envtest", "gateway", "kubernetes_asyncio")),
    ],
)
def test_a_command_imports_only_what_it_uses(argv: list[str], absent: tuple[str, ...]) -> None:
    loaded = _packages(_imported_by(argv))
    assert not loaded & set(absent), sorted(loaded & set(absent))


def test_the_probe_sees_what_a_command_imports() -> None:
    # The gateway's help does load the gateway: the probe above would see a heavy import.
    assert {"gateway", "structlog"} <= _packages(_imported_by(["gateway", "--help"]))


SERVING_ONLY_WITH_FEATURES = ("aiohttp", "kubernetes_asyncio", "pydantic", "rich")
"""Libraries a gateway serving a planes file and certificate callers, and an agent, never use:
the web framework and the Kubernetes client (the reconciler's and token reviews', loaded by
`Gateway.start` for them alone), the DataPlane models, and the traceback renderer structlog
would load (`planelink.logs.keep_rich_out`). Each is megabytes of resting memory."""


@pytest.mark.parametrize("command", ["gateway", "agent"])
def test_a_gateway_and_an_agent_load_no_framework_or_kubernetes_client(command: str) -> None:
    loaded = _packages(_imported_by([command, "--help"]))
    assert command in loaded  # the probe saw the command's modules
    assert not loaded & set(SERVING_ONLY_WITH_FEATURES), sorted(
        loaded & set(SERVING_ONLY_WITH_FEATURES)
    )


def test_top_level_help_is_fast() -> None:
    def one_run() -> float:
        started = time.perf_counter()
        shown = _help("--help")
        elapsed = time.perf_counter() - started
        assert "usage: planelink" in shown
        return elapsed

    # The best of several: one run on a loaded machine may wait for a core, the best does not.
    best = min(one_run() for _ in range(5))
    assert best < scaled(HELP_BUDGET), f"planelink --help took {best:.2f} s at best"


def test_top_level_help_lists_every_command_with_its_line() -> None:
    flat = " ".join(_help("--help").split())
    for name, command in _COMMANDS.items():
        assert f"{name} {command.help}" in flat, name


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            choices: dict[str, argparse.ArgumentParser] = action.choices
            return choices
    raise AssertionError("no subcommands")


@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_a_commands_help_shows_every_one_of_its_flags(command: str) -> None:
    parser = _subparsers(build_parser())[command]
    flags = [
        option
        for action in parser._actions
        for option in action.option_strings
        if option.startswith("--")
    ]
    shown = _help(command, "--help")
    assert shown.startswith(f"usage: planelink {command}")
    missing = [flag for flag in flags if flag not in shown]
    assert not missing, missing


def test_the_command_is_found_after_global_options() -> None:
    assert _command_in(["--log-level", "debug", "--tls-read-buffer", "65536", "agent"]) == "agent"
    assert _command_in(["--log-format=json", "gateway", "--bind", "agent"]) == "gateway"
    assert _command_in(["crd"]) == "crd"
    assert _command_in(["--help"]) is None
    assert _command_in(["nonsense"]) is None


def test_the_whole_parser_still_knows_every_command() -> None:
    parser = build_parser()
    for argv in (["agent", "--help"], ["gateway", "--help"], ["dev", "--help"]):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        assert exited.value.code == 0


def test_a_listed_command_is_not_loaded() -> None:
    listed = _subparsers(build_parser(listed_only=_COMMANDS))
    assert set(listed) == set(_COMMANDS)
    assert all(not parser._actions for parser in listed.values())


def test_an_agent_reads_yaml_only_for_a_kubeconfig() -> None:
    """In its cluster an agent reads no YAML: `kubeproxy.upstream.load_kubeconfig` imports
    PyYAML for a kubeconfig alone."""
    assert "yaml" not in _packages(_imported_by(["agent", "--help"]))


def test_a_gateway_that_reviews_nothing_never_imports_the_kubernetes_client() -> None:
    """The client is a hundred megabytes of a gateway's resting memory: only the reconciler and
    token or RBAC reviews need it, and `Gateway.start` imports it for them alone. pydantic (the
    DataPlane models) is the reconciler's too."""
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; import planelink.gateway_cli, gateway.app, gateway.reconciler, crd; "
            "print([m for m in ('kubernetes_asyncio', 'pydantic', 'aiohttp') if m in sys.modules])",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(60),
    )
    assert probe.stdout.strip() == "[]"
