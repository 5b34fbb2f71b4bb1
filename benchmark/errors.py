"""The one exception type for bad user input: the CLI prints its message on one line, without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (file, annotation, config key, task name): the message says what and where, in one line."""
