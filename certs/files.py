"""The files TLS reads, the settings that name them, and the error that says what is wrong.

Pure (no ``cryptography``): an agent names its files and reports a missing one with these alone.
What a file holds is checked by :mod:`certs.roles` (``cryptography``) and :mod:`certs.ssl_first`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from certs.errors import CertsError


class FileRole(enum.Enum):
    """What a file is given for; the value is how an error names what was expected."""

    SERVER_CERTIFICATE = "a server certificate (PEM, the certificate first, then its chain)"
    CLIENT_CERTIFICATE = "a client certificate (PEM, the certificate first, then its chain)"
    PRIVATE_KEY = "an unencrypted private key (PEM)"
    CA_BUNDLE = "CA certificates (PEM)"


@dataclass(frozen=True, slots=True)
class FileSetting:
    """The setting that names a file: how an operator changes it (flag, environment variable,
    and the Helm chart value where the chart sets it)."""

    flag: str
    env: str | None = None
    chart: str | None = None

    def hint(self) -> str:
        ways = self.flag + (f" / {self.env}" if self.env else "")
        return ways + (f" / chart value {self.chart}" if self.chart else "")


class WrongFileError(CertsError, ValueError):
    """A file given for a TLS role does not hold what that role needs.

    ``str(error)`` is one line for an operator: the file, what it holds, what was expected, and
    the setting to change.
    """

    def __init__(
        self,
        *,
        path: str,
        role: FileRole,
        holds: str,
        setting: FileSetting,
        advice: str = "",
        expected: str | None = None,
        missing: bool = False,
        unreadable: bool = False,
    ) -> None:
        self.missing = missing
        """The file does not exist (yet: a Secret not mounted, a renewal not written)."""
        self.unreadable = unreadable or missing
        """The file could not be read: `holds` says why (then it is not about contents)."""
        self.path = path
        self.role = role
        self.holds = holds
        self.setting = setting
        self.expected = expected or role.value
        self.advice = advice
        super().__init__(str(self))

    def __str__(self) -> str:
        advice = f"; {self.advice}" if self.advice else ""
        found = self.holds if self.unreadable else f"the file holds {self.holds}"
        return (
            f"{self.setting.flag} {self.path}: expected {self.expected}, but {found}{advice} "
            f"(set with {self.setting.hint()})"
        )


@dataclass(frozen=True, slots=True)
class CredentialFile:
    """A file, and the setting that named it."""

    path: Path
    setting: FileSetting


def read_file(file: CredentialFile, role: FileRole) -> bytes:
    """The bytes of `file`, or WrongFileError saying it is missing, a directory or unreadable."""
    try:
        return Path(file.path).read_bytes()
    except FileNotFoundError:
        raise WrongFileError(
            path=str(file.path),
            role=role,
            holds="there is no such file",
            setting=file.setting,
            missing=True,
        ) from None
    except IsADirectoryError:
        holds = "it is a directory"
    except PermissionError:
        holds = "this process may not read it (permission denied)"
    except OSError as error:
        holds = f"it cannot be read ({error.strerror or error})"
    raise WrongFileError(
        path=str(file.path), role=role, holds=holds, setting=file.setting, unreadable=True
    )


def refused_pair(
    certificate: CredentialFile, key: CredentialFile, role: FileRole, refused: object
) -> WrongFileError:
    """The error for a certificate and key that passed the checks but that OpenSSL refused."""
    return WrongFileError(
        path=f"{certificate.path} + {key.path}",
        role=role,
        holds=f"what OpenSSL refuses: {refused}",
        setting=certificate.setting,
    )


def refused_bundle(ca: CredentialFile, refused: object) -> WrongFileError:
    """The error for a CA bundle that passed the checks but that OpenSSL refused."""
    return WrongFileError(
        path=str(ca.path),
        role=FileRole.CA_BUNDLE,
        holds=f"what OpenSSL refuses: {refused}",
        setting=ca.setting,
    )
