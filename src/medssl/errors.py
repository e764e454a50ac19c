"""User-facing errors.

Every problem a user can fix (bad input, missing file, wrong option) is raised as a `MedSSLError` whose
message is one line saying what is wrong and what to do. The CLI prints it as ``error: <message>`` and exits
with code 2, without a traceback (``--debug`` shows one). Programming errors stay ordinary exceptions.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class MedSSLError(Exception):
    """A problem the user can fix; ``str(err)`` is a single line with what is wrong and what to do."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class InputError(MedSSLError):
    """An input file, folder or option is missing, unreadable or inconsistent."""


class PackageError(MedSSLError):
    """A model package is incomplete, tampered with, or from an incompatible version."""


class CheckpointError(MedSSLError):
    """A checkpoint is of the wrong family, truncated, unsafe or does not load into the network."""


class ResourceError(MedSSLError):
    """Not enough memory or disk for the requested run."""


class Cancelled(MedSSLError):
    """The run was cancelled by the user (SIGINT/SIGTERM)."""

    exit_code = 130


def did_you_mean(name: str, choices: Iterable[str], n: int = 3) -> str:
    """Return ``" Did you mean: a, b?"`` for the closest names, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=n, cutoff=0.4)
    return f" Did you mean: {', '.join(close)}?" if close else ""
