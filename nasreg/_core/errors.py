"""Errors nasreg reports to users.

Every error a user can cause (a bad spec, an unknown name, a broken plugin, a missing file)
is a :class:`NasregError`. The CLI prints its message on one line and exits with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class NasregError(Exception):
    """Base class of every user-facing error: one clear line, exit status 2."""

    exit_code = 2


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
