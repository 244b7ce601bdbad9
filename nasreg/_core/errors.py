"""Errors nasreg reports to users.

Every error a user can cause (a bad spec, an unknown name, a broken plugin, a missing file)
is a :class:`NasregError`. The CLI prints its message on one line and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import re

#: The longest run of non-space characters a message keeps whole (a key, a value, a path).
MAX_TOKEN = 160
#: The longest message kept whole.
MAX_MESSAGE = 2000

_LONG_TOKEN = re.compile(r"\S{%d,}" % (MAX_TOKEN + 1))


def _cut(text: str, head: int, tail: int) -> str:
    """``text``'s first ``head`` and last ``tail`` characters around a marker saying how many were cut."""
    return f"{text[:head]}...[{len(text) - head - tail:,} characters cut]...{text[len(text) - tail:]}"


def shorten(message: str) -> str:
    """``message`` with every over-long token (user text echoed: a 100,000-character key, a value,
    a path) cut to its head and tail, then the whole kept within :data:`MAX_MESSAGE`: linear in
    the message's length, and a no-op on messages already short."""
    if len(message) <= MAX_TOKEN:
        return message
    message = _LONG_TOKEN.sub(lambda m: _cut(m.group(), MAX_TOKEN * 5 // 8, MAX_TOKEN // 4), message)
    if len(message) > MAX_MESSAGE:
        message = _cut(message, MAX_MESSAGE * 3 // 4, MAX_MESSAGE // 8)
    return message


class NasregError(Exception):
    """Base class of every user-facing error: one clear line, exit status 2.

    The message is shortened here, the one place for every error (:func:`shorten`): user text
    quoted in it never makes a line of thousands of characters."""

    exit_code = 2

    def __init__(self, *args: object) -> None:
        if args and isinstance(args[0], str):
            args = (shorten(args[0]), *args[1:])
        super().__init__(*args)


class SpecError(NasregError):
    """A spec file is malformed, has an unknown key, a wrong type or an out-of-range value."""


class RegistryError(NasregError):
    """An unknown name was looked up, or a name was registered twice."""


class PluginError(NasregError):
    """A plugin failed to import or to register."""


class GenotypeError(NasregError):
    """A genotype file is malformed or names something the registries do not hold."""


class RunDirError(NasregError):
    """A run directory cannot be created, is not writable, or already exists."""


class DataError(NasregError):
    """A dataset cannot be found or read."""


class DivergenceError(NasregError):
    """A training diverged: the loss became NaN or infinite (the last good checkpoint is named)."""


class Interrupted(NasregError):
    """The user stopped the run (Ctrl-C or SIGTERM); a checkpoint was written (exit status 130)."""

    exit_code = 130
