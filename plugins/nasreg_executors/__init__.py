"""Built-in plugin ``executors``: where a study's trials and a sampling strategy's children run.

Registers the executors

- ``local`` (:class:`nasreg.LocalExecutor`): this machine; ``workers`` at a time (1: in the
  calling process), ``threads`` torch threads each (0: the free cores divided among the workers),
  ``gpus``: the GPU indices worker k is given in turn (``CUDA_VISIBLE_DEVICES``);
- ``ray`` (:mod:`nasreg_executors.ray_executor`): one Ray task per trial or child, on the cluster at
  ``address`` or on a Ray instance started for the run. Ray is an optional extra
  (``pip install 'nasreg[ray]'``), imported only when a ``ray`` executor is built.
"""

from __future__ import annotations

from typing import Annotated, Any

from nasreg import LocalExecutor, Range, hookimpl

__all__ = ["local", "ray"]


def local(workers: Annotated[int, Range(ge=1, le=1024)] = 1,
          threads: Annotated[int, Range(ge=0, le=1024)] = 0,
          gpus: list[int] | None = None) -> Any:
    """This machine: up to ``workers`` at a time, threads divided so workers x threads fits the free cores.

    ``workers = 1`` runs in the calling process; more run in worker processes started with
    ``spawn``. ``threads = 0``: the free cores (usable cores minus the one-minute load) divided
    among the workers. ``gpus``: GPU indices handed to the workers in turn (default: all GPUs
    visible to every worker)."""
    return LocalExecutor(workers=workers, threads=threads, gpus=gpus or ())


def ray(address: str = "",
        num_cpus: Annotated[int, Range(ge=0, le=1_000_000)] = 0,
        cpus_per_task: Annotated[int, Range(ge=1, le=1024)] = 1,
        gpus_per_task: Annotated[float, Range(ge=0, le=64)] = 0.0,
        shared_filesystem: bool = False,
        max_in_flight: Annotated[int, Range(ge=0, le=1_000_000)] = 0,
        max_retries: Annotated[int, Range(ge=0, le=100)] = 0,
        runtime_env: dict[str, Any] | None = None) -> Any:
    """A Ray cluster (or a local Ray instance): one Ray task per trial or child, with its CPUs and GPUs declared.

    ``address``: the cluster (``"auto"``, ``"ray://host:10001"``); empty: a Ray instance started on
    this machine for the run, with ``num_cpus`` CPUs (0: all). ``cpus_per_task`` (a task's torch
    threads) and ``gpus_per_task`` are declared to Ray's scheduler (0 GPUs: a child on CUDA still
    asks for one). ``shared_filesystem``: whether the tasks see the study directory; false ships
    each trial's run directory to its task and back. ``max_in_flight``: tasks submitted at once
    (0: all). ``max_retries``: Ray's retries of a task whose worker died (0: it fails, as a local
    worker's would). ``runtime_env``: Ray's runtime environment for the tasks (``working_dir``, ``pip``,
    ``env_vars``)."""
    from .ray_executor import RayExecutor

    if address and num_cpus:
        raise ValueError(f"num_cpus = {num_cpus} sizes a local Ray instance; the cluster at {address!r} "
                         "has its own CPUs (drop num_cpus, or address to start a local instance)")
    return RayExecutor(address=address, num_cpus=num_cpus, cpus_per_task=cpus_per_task,
                       gpus_per_task=gpus_per_task, shared_filesystem=shared_filesystem,
                       max_in_flight=max_in_flight, max_retries=max_retries,
                       runtime_env=runtime_env)


@hookimpl
def register_executors(register):
    register("local", local)
    register("ray", ray)
