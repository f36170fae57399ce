"""Command settings: one declaration per setting, from which everything else is generated.

A `Setting` names its flag, its environment variable, its default, its parser (which validates)
and its help text; `CommandSettings` turns a command's declarations into argparse options and
resolves their values with one precedence for every command: a flag wins over the environment,
the environment over the default. An environment variable that is set but empty counts as unset
(Helm and compose render a missing value as ""). Every value, from a flag or the environment,
goes through the same parser, and a bad one is a `ValueError` that names the flag or variable
it came from.

Never reads the environment while building a parser (one parser serves any environment, and
`--help` does not change with it), and never imports a role package: each command maps the
resolved values onto its role's settings classes, which validate how values fit together.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


# -- parsers: text -> value, ValueError with a reason ----------------------------------------


def boolean(text: str) -> bool:
    """1/true/yes/on or 0/false/no/off, any case; anything else is an error."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"{text!r} is not a boolean (1/true/yes/on or 0/false/no/off)")


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None


def path(text: str) -> Path:
    return Path(text)


def text(value: str) -> str:
    return value


def names(value: str) -> tuple[str, ...]:
    """A comma-separated list, blanks around and empty items dropped: "a, b," is (a, b)."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def one_of(*choices: str) -> Callable[[str], str]:
    """A parser accepting exactly one of `choices`."""

    def parse(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return parse


# -- declarations -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True, slots=True)
class Setting:
    """One setting of a command: `--<name with dashes>` and `<prefix><NAME>` unless told."""

    name: str
    """The attribute the resolved value is found under."""
    help: str
    parse: Callable[[str], Any] = text
    default: Any = None
    default_factory: Callable[[], Any] | None = None
    """Computes the default when the command runs (e.g. from the pod name); wins over `default`."""
    shown_default: str | None = None
    """The default as `--help` says it; by default `default` itself ("on" for True), unless
    None, "" or False."""
    env: str | None = None
    """The environment variable, when it is not the command's prefix and NAME."""
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    """The only values accepted (then `parse` is `one_of(*choices)`)."""
    switch: bool = False
    """A boolean given as a bare flag (`--name` means true); with `negatable` also `--no-name`."""
    negatable: bool = False
    required: bool = False
    """Neither flag nor environment variable given is an error."""

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def parser(self) -> Callable[[str], Any]:
        """What reads the setting's text (a switch's from the environment: `boolean`)."""
        if self.switch:
            return boolean
        return one_of(*self.choices) if self.choices else self.parse

    def default_value(self) -> Any:
        return self.default_factory() if self.default_factory is not None else self.default

    def default_text(self) -> str | None:
        if self.shown_default is not None:
            return self.shown_default
        if self.default in (None, "", False) or self.default_factory is not None:
            return None
        if self.default is True:
            return "on"
        if isinstance(self.default, float):
            return f"{self.default:g}"
        return str(self.default)


@dataclasses.dataclass(frozen=True, slots=True)
class Group:
    """Settings shown together in `--help`; `title` None: the command's own options."""

    title: str | None
    settings: tuple[Setting, ...]
    description: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class CommandSettings:
    """The settings of one command, their environment variables named `<env_prefix><NAME>`."""

    env_prefix: str
    groups: tuple[Group, ...]

    def __iter__(self) -> Iterator[Setting]:
        for group in self.groups:
            yield from group.settings

    def env(self, setting: Setting) -> str:
        return setting.env or self.env_prefix + setting.name.upper()

    def help(self, setting: Setting) -> str:
        shown = setting.default_text()
        if setting.required:
            default = " (required)"
        elif shown is not None:
            default = f" (default: {shown})"
        else:
            default = ""
        return f"{setting.help}{default} [{self.env(setting)}]".replace("%", "%%")

    def add_command(
        self,
        commands: argparse._SubParsersAction[argparse.ArgumentParser],
        name: str,
        *,
        description: str,
        run: Callable[[argparse.Namespace], int],
        epilog: str | None = None,
    ) -> None:
        """Register the subcommand `name` with every setting as an option; `run` runs it and
        returns the exit code."""
        parser = commands.add_parser(
            name,
            description=description,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        self.add_to(parser)
        parser.set_defaults(run=run)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Add every setting as an option; a flag not given leaves None (see `resolve`)."""
        for group in self.groups:
            target: argparse.ArgumentParser | argparse._ArgumentGroup = parser
            if group.title is not None:
                target = parser.add_argument_group(group.title, group.description)
            for setting in group.settings:
                self._add(target, setting)

    def _add(
        self,
        target: argparse.ArgumentParser | argparse._ArgumentGroup,
        setting: Setting,
    ) -> None:
        common: dict[str, Any] = {"dest": setting.name, "default": None}
        if setting.switch and setting.negatable:
            target.add_argument(
                setting.flag,
                action=argparse.BooleanOptionalAction,
                help=self.help(setting),
                **common,
            )
        elif setting.switch:
            target.add_argument(
                setting.flag, action="store_const", const=True, help=self.help(setting), **common
            )
        else:
            metavar = setting.metavar
            if metavar is None and setting.choices:
                metavar = "{" + ",".join(setting.choices) + "}"
            target.add_argument(setting.flag, metavar=metavar, help=self.help(setting), **common)

    def resolve(self, args: argparse.Namespace, environ: Mapping[str, str]) -> argparse.Namespace:
        """Every setting's value: its flag's, else its environment variable's, else its default.
        Raises ValueError naming the flag or variable whose value is wrong or missing."""
        missing = [
            f"{setting.flag} (or {self.env(setting)})"
            for setting in self
            if setting.required
            and getattr(args, setting.name, None) is None
            and not environ.get(self.env(setting), "")
        ]
        if missing:
            raise ValueError(f"{', '.join(missing)} required")
        values = argparse.Namespace()
        for setting in self:
            setattr(values, setting.name, self._value(setting, args, environ))
        return values

    def arguments(self, args: argparse.Namespace) -> list[str]:
        """The flags given in `args`, as a command line again (to run the command anew, e.g.
        in a worker process): what came from the environment is left to the environment."""
        line: list[str] = []
        for setting in self:
            given = getattr(args, setting.name, None)
            if given is None:
                continue
            if isinstance(given, bool):
                line.append(setting.flag if given else "--no-" + setting.flag[2:])
            else:
                line += [setting.flag, str(given)]
        return line

    def _value(self, setting: Setting, args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
        given = getattr(args, setting.name, None)
        env = self.env(setting)
        if isinstance(given, bool):  # --switch / --no-switch
            return given
        if given is not None:
            source, raw = setting.flag, str(given)
        elif environ.get(env, ""):
            source, raw = env, environ[env]
        else:
            return setting.default_value()
        try:
            return setting.parser(raw)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None


NAMESPACES = Setting(
    name="namespaces",
    parse=names,
    default=(),
    shown_default="all",
    help="comma-separated namespaces to watch",
)
"""`--namespaces` of the commands that follow DataPlanes (gateway, reconciler)."""
