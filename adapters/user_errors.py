"""Errors the user can fix: what they typed, their config, their files or their environment.

Every flow CLI (``flows/runner.py``) and stage CLI (``tasks/common/stage_cli.py``) prints one of these as
one line on stderr and exits 2, without a traceback: a bad config value, a missing directory or
API key, an unreachable lab. Errors of modules that do not derive from ``UserInputError`` are
named by the CLI that knows them (``user_error_types(WellSourceError)``).
"""

from __future__ import annotations


class UserInputError(Exception):
    """The user's input, config or environment is wrong; the message says what to change."""


def user_error_types(*extra: type[BaseException]) -> tuple[type[BaseException], ...]:
    """The exceptions a CLI reports as one line and exit 2: this family, a missing file, and ``extra``."""
    return (UserInputError, FileNotFoundError, *extra)


def one_line(error: BaseException) -> str:
    """``error: <message>`` on one line (a message that spans lines is joined with '; ')."""
    parts = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "error: " + "; ".join(parts)
