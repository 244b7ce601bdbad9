"""Every hook nasreg calls, one docstring each.

Registration hooks receive ``register``, a callable bound to the plugin being asked:
``register(name, factory, **metadata)``. ``description=`` is optional (the factory's docstring's
first line serves otherwise); any other keyword is kept as metadata on the entry. The core calls
each plugin's registration hooks separately, so every entry knows its plugin.

Lifecycle hooks let a plugin observe a run (log, plot, notify) without any core change. Like any
pluggy hook, an implementation may accept any subset of the arguments, so arguments can be added
later without breaking a plugin.
"""

from __future__ import annotations

import pluggy

PROJECT = "nasreg"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --- registration -------------------------------------------------------------------------------

@hookspec
def register_operations(register):
    """Register candidate operations.

    ``factory(C: int, stride: int, affine: bool) -> torch.nn.Module`` maps (N, C, H, W) to
    (N, C, H/stride, W/stride). Metadata the core reads: ``is_zero`` (True for the op that outputs
    zeros: the supernet skips its compute and selectors ignore it), ``parameter_free`` (True when
    the op has no trainable weights).
    """


@hookspec
def register_search_spaces(register):
    """Register search spaces.

    ``factory(operations: list[str], **keys)`` receives ``[search_space] operations`` and the
    other keys of ``[search_space]`` and returns a :class:`nasreg.SearchSpace`.
    """


@hookspec
def register_strategies(register):
    """Register search strategies (how weights and architecture are optimized).

    ``factory(**keys)`` receives the keys of ``[strategy]`` (all but ``name``) and returns a
    :class:`nasreg.SearchStrategy`.
    """


@hookspec
def register_selectors(register):
    """Register selection strategies (how the architecture is derived, in one or more stages).

    ``factory(**keys)`` receives the keys of ``[selector]`` (all but ``name``; a sub-table such as
    ``[selector.clusterer]`` is passed as a dict) and returns a :class:`nasreg.Selector`.
    """


@hookspec
def register_clusterers(register):
    """Register clusterers.

    ``factory(**keys)`` receives the keys of the spec table that names it (all but ``name``) and
    returns an object with scikit-learn's ``fit_predict(X) -> labels``, so scikit-learn estimators
    register directly.
    """


@hookspec
def register_datasets(register):
    """Register datasets.

    ``factory(**keys)`` receives the keys of ``[data]`` that the core does not own (``root``,
    ``download``, ...) and returns a :class:`nasreg.DatasetBundle`.
    """


@hookspec
def register_executors(register):
    """Register executors (where independent trainings run: a study's trials, a sampling
    strategy's children).

    ``factory(**keys)`` receives the keys of ``[executor]`` (all but ``name``) and returns a
    :class:`nasreg.Executor`.
    """


@hookspec
def register_loggers(register):
    """Register loggers (experiment trackers a spec switches on: ``[run] loggers = [names]``).

    ``factory(**keys)`` receives the keys of ``[loggers.<name>]`` and returns an object whose
    methods are lifecycle hook implementations marked with ``nasreg.hookimpl``; the engines
    register it for one run (a search, its ``[evaluate]``, ``nasreg train``) and unregister it at
    the end, calling its ``close(status)`` if it has one (``"finished"``, ``"failed"`` or
    ``"interrupted"``). ``nasreg validate`` builds it too: the factory opens no file and no
    connection.
    """


# --- lifecycle ----------------------------------------------------------------------------------

@hookspec
def on_run_start(run):
    """Called once a run's spec is validated and its run directory exists, before any training.

    ``run`` is the :class:`nasreg.RunContext` (spec, run directory, registries, device).
    """


@hookspec
def on_epoch_end(run, stage, epoch, metrics):
    """Called after every search epoch with that epoch's metrics (the dict written to
    ``metrics.jsonl``). ``stage`` and ``epoch`` count from 0."""


@hookspec
def on_stage_end(run, stage, result):
    """Called when a search stage ends; ``result`` is the :class:`nasreg.StageResult`
    (candidate sets, final alphas, recorded gradient and alpha trajectories)."""


@hookspec
def on_run_end(run, genotype, summary):
    """Called when a run ends with its :class:`nasreg.Genotype` and the summary dict
    written to ``summary.json``."""


# --- training from scratch ([evaluate], nasreg train) ----------------------------------------------

@hookspec
def on_train_start(run, kind, epochs, steps, params):
    """Called when a training from scratch starts, before its first epoch: a search's
    ``[evaluate]`` (``kind == "evaluate"``, into ``RUN_DIR/eval/``) or ``nasreg train``
    (``kind == "train"``). ``run`` is the :class:`nasreg.TrainRun` (``run.spec``, ``run.run_dir``,
    ``run.device``, ``run.genotype``, ``run.extras``); ``epochs`` and ``steps`` (per epoch) are the
    training's length, ``params`` the network's parameters without an auxiliary head. Not called
    for the children a sampling strategy trains (those are reported by the strategy)."""


@hookspec
def on_train_epoch_end(run, kind, epoch, metrics):
    """Called after every epoch of a training from scratch with that epoch's metrics (the dict
    written to that run's ``metrics.jsonl``: ``lr``, ``drop_path_prob``, ``train_loss``,
    ``train_acc``, ``test_loss``, ``test_acc``, ``test_error``, seconds, peak memory), once its
    checkpoint is written. ``epoch`` counts from 0."""


@hookspec
def on_train_end(run, kind, results):
    """Called when a training from scratch ends, with the dict written to ``results.json``."""
