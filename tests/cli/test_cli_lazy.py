"""`planelink <command>` loads only that command's modules: an agent starts without the
gateway's dependencies (kubernetes_asyncio alone is a second of imports)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from planelink.cli import _command_in, build_parser
from tests.kit.waits import scaled

PROBE = """
import sys
from planelink.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
watched = ("kubernetes_asyncio", "gateway.app", "envtest")
print(sorted(name for name in watched if name in sys.modules))
"""


@pytest.mark.parametrize(
    ("argv", "absent"),
    [
        (["agent", "--help"], ["envtest", "gateway.app", "kubernetes_asyncio"]),
        (["certs", "--help"], ["envtest", "gateway.app", "kubernetes_asyncio"]),
        (["--log-level", "warning", "status", "--help"], ["gateway.app", "kubernetes_asyncio"]),
    ],
)
def test_a_command_imports_only_what_it_uses(argv: list[str], absent: list[str]) -> None:
    probe = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv)],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(60),
    )
    loaded = probe.stdout.strip().splitlines()[-1]
    for module in absent:
        assert repr(module) not in loaded, loaded


def test_the_command_is_found_after_global_options() -> None:
    assert _command_in(["--log-level", "debug", "--tls-read-buffer", "65536", "agent"]) == "agent"
    assert _command_in(["--log-format=json", "gateway", "--bind", "agent"]) == "gateway"
    assert _command_in(["crd"]) is None  # built in: the whole parser is cheap enough
    assert _command_in(["--help"]) is None
    assert _command_in(["nonsense"]) is None


def test_the_whole_parser_still_knows_every_command() -> None:
    parser = build_parser()
    for argv in (["agent", "--help"], ["gateway", "--help"], ["dev", "--help"]):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(argv)
        assert exited.value.code == 0
