"""Structured logging for every planelink process.

JSON lines in production (or whenever output is not a terminal), readable colourless key=value
lines on a terminal. Components bind their context (plane, agent, stream ids) with
`structlog.get_logger().bind(...)`; this module only decides the output.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, Literal

from planelink.settings import CommandSettings, Group, Setting

LogFormat = Literal["auto", "json", "console"]

LOG_SETTINGS = CommandSettings(
    "PLANELINK_",
    (
        Group(
            None,
            (
                Setting(
                    name="log_level",
                    choices=("debug", "info", "warning", "error"),
                    default="info",
                    help="the least severe messages that are logged",
                ),
                Setting(
                    name="log_format",
                    choices=("auto", "json", "console"),
                    default="auto",
                    help="json for production; auto picks console on a terminal and json otherwise",
                ),
            ),
        ),
    ),
)
"""The logging options of `planelink` and of `python -m planelink.agent_cli`."""


def keep_rich_out() -> None:
    """Make `rich` unimportable in this process (unless something imported it already).

    structlog imports rich whenever it is installed (import-linter brings it into a development
    environment) to render tracebacks that planelink's renderers never show: 10 MiB of resting
    memory and a tenth of a second of start-up for each process. Only an entry point calls this,
    before structlog is imported: it decides for the whole process.
    """
    # A None entry makes `import rich` raise ModuleNotFoundError, which structlog expects.
    sys.modules.setdefault("rich", None)  # type: ignore[arg-type]


@functools.cache
def _encoder(default: Callable[[Any], Any]) -> json.JSONEncoder:
    return json.JSONEncoder(default=default)


def _reused_encoder(obj: Any, *, default: Callable[[Any], Any]) -> str:
    """`json.dumps` for the JSON renderer, with one encoder kept: `json.dumps` builds a new
    `JSONEncoder` on each call that passes `default` (as structlog's renderer does), two fifths
    of the time it takes to encode a line such as the access line."""
    return _encoder(default).encode(obj)


def configure_logging_from(args: argparse.Namespace, environ: Mapping[str, str]) -> None:
    """`configure_logging` as the parsed `LOG_SETTINGS` and the environment say (ValueError
    naming the flag or variable when one is wrong)."""
    values = LOG_SETTINGS.resolve(args, environ)
    configure_logging(level=values.log_level, log_format=values.log_format)


def configure_logging(*, level: str = "info", log_format: LogFormat = "auto") -> None:
    """Configure structlog and the standard library's logging to write to stderr."""
    # Imported here, not above: structlog's renderers pull in rich, a third of a second that
    # `planelink --help` (which reads LOG_SETTINGS) must not pay.
    import structlog  # noqa: PLC0415

    use_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer(serializer=_reused_encoder)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # One write per line (print() writes the newline apart): the workers of one gateway
        # share stderr, and two lines must never be glued into one.
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries (aiohttp, websockets, kubernetes_asyncio) log through the standard library;
    # route them through the same renderer so one process writes one format.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric_level, logging.INFO))
