"""The one settings mechanism of every command: precedence, parsing, errors, generated help."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from planelink import agent_cli, gateway_cli, reconciler_cli, status_cli
from planelink.cli import main
from planelink.logs import LOG_SETTINGS
from planelink.settings import (
    CommandSettings,
    Group,
    Setting,
    boolean,
    integer,
    number,
    path,
)

SETTINGS = CommandSettings(
    "DEMO_",
    (
        Group(
            None,
            (
                Setting(name="port", parse=integer, default=8443, help="a port"),
                Setting(name="ratio", parse=number, default=0.5, help="a ratio"),
                Setting(name="config", parse=path, required=True, help="a file"),
                Setting(name="verbose", switch=True, default=False, help="say more"),
                Setting(name="strict", switch=True, negatable=True, default=True, help="refuse"),
                Setting(name="mode", choices=("fast", "safe"), default="safe", help="how"),
                Setting(name="who", default_factory=lambda: "computed", help="a name"),
                Setting(name="url", env="ELSEWHERE_URL", help="where"),
            ),
        ),
        Group("extras", (Setting(name="percent", parse=integer, help="100% sure"),)),
    ),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="demo")
    SETTINGS.add_to(parser)
    return parser


def _resolve(*flags: str, **environ: str) -> argparse.Namespace:
    return SETTINGS.resolve(_parser().parse_args(["--config", "c.yaml", *flags]), environ)


def test_a_flag_wins_over_the_environment_which_wins_over_the_default() -> None:
    assert _resolve().port == 8443
    assert _resolve(DEMO_PORT="9000").port == 9000
    assert _resolve("--port", "7000", DEMO_PORT="9000").port == 7000
    assert _resolve(ELSEWHERE_URL="https://x").url == "https://x"  # a variable of its own name


def test_values_are_parsed_the_same_from_flags_and_environment() -> None:
    from_flag = _resolve("--ratio", "0.25", "--mode", "fast", "--config", "a.yaml")
    from_env = SETTINGS.resolve(
        _parser().parse_args([]),
        {"DEMO_RATIO": "0.25", "DEMO_MODE": "fast", "DEMO_CONFIG": "a.yaml"},
    )
    assert (from_flag.ratio, from_flag.mode, from_flag.config) == (0.25, "fast", Path("a.yaml"))
    assert (from_env.ratio, from_env.mode, from_env.config) == (0.25, "fast", Path("a.yaml"))


def test_an_empty_variable_counts_as_unset() -> None:
    assert _resolve(DEMO_PORT="").port == 8443
    assert _resolve(DEMO_VERBOSE="").verbose is False
    assert _resolve(DEMO_STRICT="").strict is True


def test_defaults_are_computed_when_the_command_runs() -> None:
    assert _resolve().who == "computed"
    assert _resolve(DEMO_WHO="given").who == "given"


@pytest.mark.parametrize("text", ["1", "true", "TRUE", "Yes", "on", " On "])
def test_true_is_spelled_like_everywhere_else(text: str) -> None:
    assert boolean(text) is True
    assert _resolve(DEMO_VERBOSE=text).verbose is True


@pytest.mark.parametrize("text", ["0", "false", "False", "NO", "off"])
def test_false_is_spelled_like_everywhere_else(text: str) -> None:
    assert boolean(text) is False
    assert _resolve(DEMO_STRICT=text).strict is False


def test_switches_from_flags() -> None:
    assert _resolve("--verbose").verbose is True
    assert _resolve("--no-strict", DEMO_STRICT="yes").strict is False  # the flag wins
    assert _resolve("--strict", DEMO_STRICT="no").strict is True


def test_the_flags_given_make_the_same_command_line_again() -> None:
    """What a supervisor re-executes for its workers: the flags given, and nothing that came
    from the environment or a default."""
    given = ["--config", "c.yaml", "--port", "7000", "--verbose", "--no-strict", "--percent=5"]
    line = SETTINGS.arguments(_parser().parse_args(given))
    assert line == [
        "--port",
        "7000",
        "--config",
        "c.yaml",
        "--verbose",
        "--no-strict",
        "--percent",
        "5",
    ]
    assert SETTINGS.resolve(_parser().parse_args(line), {}) == SETTINGS.resolve(
        _parser().parse_args(given), {}
    )


@pytest.mark.parametrize(
    ("flags", "environ", "named"),
    [
        ([], {"DEMO_VERBOSE": "maybe"}, "DEMO_VERBOSE: 'maybe' is not a boolean"),
        ([], {"DEMO_PORT": "80x"}, "DEMO_PORT: '80x' is not an integer"),
        (["--port", "eighty"], {}, "--port: 'eighty' is not an integer"),
        (["--ratio", "half"], {}, "--ratio: 'half' is not a number"),
        ([], {"DEMO_MODE": "quick"}, "DEMO_MODE: 'quick' is not one of fast, safe"),
        (["--mode", "quick"], {}, "--mode: 'quick' is not one of fast, safe"),
    ],
)
def test_a_bad_value_is_an_error_naming_its_source(
    flags: list[str], environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        _resolve(*flags, **environ)


def test_a_required_setting_missing_names_flag_and_variable() -> None:
    with pytest.raises(ValueError, match=r"^--config \(or DEMO_CONFIG\) required$"):
        SETTINGS.resolve(_parser().parse_args([]), {})


def test_help_is_generated_from_the_declarations(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "--port PORT a port (default: 8443) [DEMO_PORT]" in shown
    assert "--ratio RATIO a ratio (default: 0.5) [DEMO_RATIO]" in shown
    assert "--config CONFIG a file (required) [DEMO_CONFIG]" in shown
    assert "--verbose say more [DEMO_VERBOSE]" in shown
    assert "--strict, --no-strict refuse (default: on) [DEMO_STRICT]" in shown
    assert "--mode {fast,safe} how (default: safe) [DEMO_MODE]" in shown
    assert "--url URL where [ELSEWHERE_URL]" in shown
    assert "extras: --percent PERCENT 100% sure [DEMO_PERCENT]" in shown


@pytest.mark.parametrize("text", ["1", "true", "yes", "on", "TRUE"])
def test_the_gateway_reconciles_with_any_spelling_of_true(text: str) -> None:
    # PLANELINK_GATEWAY_RECONCILE=1 used to mean false (only "true" was true).
    args = _gateway_args()
    assert gateway_cli.settings_from(args, {"PLANELINK_GATEWAY_RECONCILE": text}).reconciler
    assert gateway_cli.settings_from(args, {"PLANELINK_GATEWAY_RECONCILE": "0"}).reconciler is None


def test_the_gateway_refuses_a_boolean_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="PLANELINK_GATEWAY_AUTHORIZE: 'sure'"):
        gateway_cli.settings_from(_gateway_args(), {"PLANELINK_GATEWAY_AUTHORIZE": "sure"})


def test_the_gateway_refuses_a_choice_from_the_environment_it_does_not_offer() -> None:
    with pytest.raises(ValueError, match="PLANELINK_GATEWAY_AGENT_IDENTITY"):
        gateway_cli.settings_from(
            _gateway_args(), {"PLANELINK_GATEWAY_AGENT_IDENTITY": "sometimes"}
        )


def test_the_gateway_needs_its_certificate_from_a_flag_or_the_environment() -> None:
    parser = argparse.ArgumentParser()
    gateway_cli.add_gateway_parser(parser.add_subparsers())
    bare = parser.parse_args(["gateway"])
    with pytest.raises(ValueError, match="required") as missing:
        gateway_cli.settings_from(bare, {})
    assert str(missing.value) == (
        "--tls-cert (or PLANELINK_GATEWAY_TLS_CERT), --tls-key (or PLANELINK_GATEWAY_TLS_KEY), "
        "--caller-ca (or PLANELINK_GATEWAY_CALLER_CA) required"
    )
    environ = {
        "PLANELINK_GATEWAY_TLS_CERT": "t.crt",
        "PLANELINK_GATEWAY_TLS_KEY": "t.key",
        "PLANELINK_GATEWAY_CALLER_CA": "ca.crt",
    }
    assert gateway_cli.settings_from(bare, environ).server_certificate == Path("t.crt")


def test_the_reconciler_reads_its_switches_like_the_gateway() -> None:
    parser = argparse.ArgumentParser()
    reconciler_cli.add_reconciler_parser(parser.add_subparsers())
    args = parser.parse_args(["reconciler"])
    environ = {
        "PLANELINK_RECONCILER_WRITE_STATUS": "1",
        "PLANELINK_RECONCILER_REQUIRE_IDENTITY": "off",
    }
    settings = reconciler_cli.settings_from(args, environ)
    assert settings.write_status is True
    assert settings.require_identity is False
    with pytest.raises(ValueError, match="PLANELINK_RECONCILER_REQUIRE_IDENTITY: 'flase'"):
        reconciler_cli.settings_from(args, {"PLANELINK_RECONCILER_REQUIRE_IDENTITY": "flase"})


def test_every_command_declares_each_variable_once() -> None:
    for settings in (
        agent_cli.SETTINGS,
        gateway_cli.SETTINGS,
        reconciler_cli.SETTINGS,
        status_cli.SETTINGS,
    ):
        variables = [settings.env(setting) for setting in settings]
        flags = [setting.flag for setting in settings]
        assert len(set(variables)) == len(variables)
        assert len(set(flags)) == len(flags)


def _gateway_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    gateway_cli.add_gateway_parser(parser.add_subparsers())
    return parser.parse_args(
        ["gateway", "--tls-cert", "t.crt", "--tls-key", "t.key", "--caller-ca", "ca.crt"]
    )


def test_the_logging_options_are_read_alike_by_every_entry_point(
    capsys: pytest.CaptureFixture[str],
) -> None:
    parser = argparse.ArgumentParser()
    LOG_SETTINGS.add_to(parser)
    values = LOG_SETTINGS.resolve(parser.parse_args([]), {"PLANELINK_LOG_LEVEL": "debug"})
    assert (values.log_level, values.log_format) == ("debug", "auto")
    flagged = parser.parse_args(["--log-level", "error"])
    assert LOG_SETTINGS.resolve(flagged, {"PLANELINK_LOG_LEVEL": "debug"}).log_level == "error"
    assert main(["--log-level", "loud", "crd"]) == 2
    assert "--log-level: 'loud' is not one of debug" in capsys.readouterr().err
