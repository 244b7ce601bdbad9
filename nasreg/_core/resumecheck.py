"""What ``nasreg resume`` checks before it continues a search: that what it found belongs together.

A search checkpoint records what it belongs to (:func:`identity`): the digest of the spec it was
written under and that resolved spec, the stage plan and the steps per epoch. Before resume changes
anything in the run directory it checks, in this order, and refuses on one line saying what
differs (a :class:`ResumeRefused`, a :class:`~nasreg._core.rundir.CheckpointError`: exit status 2):

1. :func:`check_spec`: ``spec.toml`` is the spec the checkpoint (or a finished search's
   ``summary.json``) was written under; an edit names the keys that changed;
2. :func:`check_checkpoint`: every key the search reads back is there, of its type; the
   position (stage, epoch, step) lies inside the spec's stage plan; the candidates are the
   spec's operations on the space's edges; the RNG and data-order states can be restored;
3. :func:`check_step` and :func:`load_state` (once the stage's supernet and strategy exist): the
   step lies inside the epoch, the weights and the strategy state fit them.

:func:`check_resumable` makes checks 1 and 2 as soon as ``spec.toml`` is read (before the
search is prepared); the search makes them again on what it loads, and then check 3.

A checkpoint from before spec digests were recorded (no ``spec_digest``) is accepted with a
notice: checks 2 and 3 still apply, so a checkpoint of another spec that does not fit the
supernet is still refused.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .rundir import CheckpointError

__all__ = ["ResumeRefused", "check_checkpoint", "check_finished", "check_resumable", "check_spec", "check_step",
           "identity", "load_state", "spec_differences"]


class ResumeRefused(CheckpointError):
    """Resume refuses a run directory whose parts do not belong together; nothing was changed
    (a search that raises it has not started: it is no failure of the run to record)."""

#: Differences listed in one message at most (the rest are counted).
MAX_LISTED = 4
#: Characters of one value shown in a message at most.
MAX_VALUE = 60


# --- what a checkpoint records ----------------------------------------------------------------------

def identity(spec: Any, stages: Iterable[tuple[int, int]], steps: int) -> dict[str, Any]:
    """The keys a search checkpoint stores beside its state: what it belongs to."""
    return {"spec_digest": spec.digest(), "spec": spec.resolved(),
            "plan": {"stages": [[int(w), int(e)] for w, e in stages], "steps": int(steps)}}


# --- 1. the spec ------------------------------------------------------------------------------------

def _comparable(resolved: Any) -> dict[str, Any]:
    """The part of a resolved spec its digest covers, as plain JSON values."""
    data = json.loads(json.dumps(resolved, sort_keys=True, default=str))
    if not isinstance(data, dict):
        return {}
    run = data.get("run")
    if isinstance(run, dict):
        data["run"] = {k: v for k, v in run.items() if k not in ("name", "out_dir")}
    data.pop("evaluate", None)
    return data


def _flatten(table: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out: dict[tuple[str, ...], Any] = {}
    for key, value in table.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, (*prefix, str(key))))
        else:
            out[(*prefix, str(key))] = value
    return out


def short(value: Any, limit: int = MAX_VALUE) -> str:
    """``value`` as a message shows it: JSON-like, cut to ``limit`` characters."""
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def cut(text: str, limit: int = 120) -> str:
    """The first line of ``text``, cut to ``limit`` characters."""
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _key_name(path: tuple[str, ...]) -> str:
    return f"[{'.'.join(path[:-1])}] {path[-1]}" if len(path) > 1 else f"[{path[0]}]"


def spec_differences(recorded: Any, current: Any) -> list[str]:
    """``"[run] seed 1 -> 2"`` for every key (the digest covers) whose value differs."""
    old, new = _flatten(_comparable(recorded)), _flatten(_comparable(current))
    missing = object()
    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path, missing), new.get(path, missing)
        if a != b:
            out.append(f"{_key_name(path)} {'(absent)' if a is missing else short(a)} -> "
                       f"{'(absent)' if b is missing else short(b)}")
    return out


def _listed(items: list[str]) -> str:
    more = len(items) - MAX_LISTED
    return ", ".join(items[:MAX_LISTED]) + (f" and {more} more" if more > 0 else "")


def check_spec(spec: Any, recorded_digest: Any, recorded_spec: Any, source: Path, *, what: str = "the run") -> None:
    """Refuse when ``spec`` (read from ``spec.toml``) is not the spec ``source`` was written under:
    its digest differs from ``recorded_digest``; the differing keys are named when the resolved
    spec was recorded too."""
    if recorded_digest is None or recorded_digest == spec.digest():
        return
    if not isinstance(recorded_digest, str):
        raise ResumeRefused(f"{source}: the recorded spec digest is {_kind(recorded_digest)}, expected a string; "
                            "resume refuses")
    spec_path = spec.path
    diffs = spec_differences(recorded_spec, spec.resolved()) if isinstance(recorded_spec, dict) else []
    detail = _listed(diffs) if diffs else f"its hash is {spec.digest()}, {source.name} records {recorded_digest}"
    raise ResumeRefused(f"{spec_path}: spec.toml was edited after {what} ({source} was written under another "
                          f"spec): {detail}; resume refuses (restore the spec, or start a new run)")


def check_finished(spec: Any, summary: dict[str, Any], summary_path: Path, checkpoint_path: Path) -> None:
    """A finished search's ``summary.json`` ``spec_hash`` against ``spec.toml`` (the keys named
    from the checkpoint's recorded spec, when the checkpoint is there and has one)."""
    recorded_spec = None
    if summary.get("spec_hash") != spec.digest() and checkpoint_path.is_file():
        from .rundir import RunDir

        try:
            recorded_spec = RunDir(checkpoint_path.parent).load_checkpoint(name=checkpoint_path.name).get("spec")
        except CheckpointError:
            recorded_spec = None
    check_spec(spec, summary.get("spec_hash"), recorded_spec, summary_path, what="the search")


# --- 2. the checkpoint's keys, types and position ------------------------------------------------------

def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _tensor(v: Any) -> bool:
    return isinstance(v, torch.Tensor)


def _accum(v: Any) -> bool:
    return v is None or (isinstance(v, (tuple, list)) and len(v) == 3 and _number(v[0])
                         and _int(v[1]) and _int(v[2]) and 0 <= v[1] <= v[2])


#: Key -> (check, what it must be): every key of a search checkpoint the search reads back.
_SCHEMA: dict[str, tuple[Callable[[Any], bool], str]] = {
    "stage": (_int, "an integer"),
    "epoch": (_int, "an integer"),
    "step": (_int, "an integer"),
    "candidates": (lambda v: isinstance(v, dict), "a table of per-edge candidate lists"),
    "model": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and _tensor(t) for k, t in v.items()),
              "a table of tensors"),
    "strategy": (lambda v: isinstance(v, dict), "a table"),
    "stage_state": (lambda v: isinstance(v, dict) and isinstance(v.get("grad_history"), dict)
                    and isinstance(v.get("alpha_history"), dict)
                    and all(isinstance(v.get(k), list) and all(_number(x) for x in v[k])
                            for k in ("epoch_seconds", "step_times")),
                    "a table of grad_history, alpha_history, epoch_seconds and step_times"),
    "recorder": (lambda v: isinstance(v, dict) and (v.get("acc") is None or _tensor(v.get("acc")))
                 and _int(v.get("count")) and v["count"] >= 0, "a table of acc (a tensor or none) and count"),
    "loader_states": (lambda v: isinstance(v, dict) and _tensor(v.get("train")) and _tensor(v.get("val")),
                      "a table of the train and val generator states"),
    "accum": (_accum, "none or (loss sum, correct, count)"),
    "stage_infos": (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of tables"),
    "gradients": (lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v), "a list of tables"),
    "elapsed": (lambda v: _number(v) and v >= 0, "a non-negative number of seconds"),
    "rng": (lambda v: isinstance(v, dict) and {"python", "numpy", "torch", "cuda"} <= set(v),
            "a table of the python, numpy, torch and cuda states"),
    "loader": (lambda v: v in (None, "device", "dataloader"), "'device', 'dataloader' or none"),
}
_OPTIONAL = {"loader"}


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {list(value.shape)}"
    return short(value, 40) if isinstance(value, (bool, int, float, str)) else f"a {type(value).__name__}"


def _check_keys(ckpt: dict[str, Any], path: Path) -> None:
    missing = [k for k in _SCHEMA if k not in ckpt and k not in _OPTIONAL]
    if missing:
        raise ResumeRefused(f"{path}: not a complete search checkpoint: "
                              f"{_listed([repr(k) for k in missing])} missing; resume refuses")
    for key, (ok, expected) in _SCHEMA.items():
        if key in ckpt and not ok(ckpt[key]):
            raise ResumeRefused(f"{path}: {key!r} is {_kind(ckpt[key])}, expected {expected}; resume refuses")


def _check_position(ckpt: dict[str, Any], path: Path, stages: list[tuple[int, int]]) -> None:
    """Stage, epoch and step inside the spec's stage plan; as many finished stages recorded."""
    stage, epoch, step = ckpt["stage"], ckpt["epoch"], ckpt["step"]

    def refuse(what: str) -> CheckpointError:
        return ResumeRefused(f"{path}: {what}; resume refuses")

    if not 0 <= stage < len(stages):
        raise refuse(f"'stage' is {stage}, but the spec has {len(stages)} stage(s) (0 to {len(stages) - 1})")
    epochs = stages[stage][1]
    if not 0 <= epoch <= epochs:
        raise refuse(f"'epoch' is {epoch}, but stage {stage} has {epochs} epoch(s) (a checkpoint is at "
                     f"epoch 0 to {epochs})")
    if step < 0 or (step > 0 and epoch == epochs):
        raise refuse(f"'step' is {step} at epoch {epoch} of stage {stage} (expected "
                     f"{'0' if epoch == epochs else '0 or more'})")
    if step > 0 and ckpt["accum"] is None:
        raise refuse(f"'step' is {step} (mid-epoch) but 'accum' is none")
    steps = ckpt["plan"].get("steps") if isinstance(ckpt.get("plan"), dict) else None
    if _int(steps) and step >= steps:
        raise refuse(f"'step' is {step}, but an epoch has {steps} step(s) (0 to {steps - 1})")
    for key in ("stage_infos", "gradients"):
        if len(ckpt[key]) != stage:
            raise refuse(f"{key!r} records {len(ckpt[key])} finished stage(s) at stage {stage}")


def _check_plan(ckpt: dict[str, Any], path: Path, stages: list[tuple[int, int]]) -> None:
    """The stage plan recorded (if any: older checkpoints have none) is the spec's."""
    plan = ckpt.get("plan")
    if plan is None:
        return
    if not (isinstance(plan, dict) and isinstance(plan.get("stages"), list)
            and (plan.get("steps") is None or (_int(plan["steps"]) and plan["steps"] >= 1))):
        raise ResumeRefused(f"{path}: 'plan' is {_kind(plan)}, expected a table of stages and steps; resume refuses")
    now = [[int(w), int(e)] for w, e in stages]
    if plan["stages"] != now:
        raise ResumeRefused(f"{path}: written for the stage plan (warm-up, epochs) {short(plan['stages'])}, "
                              f"the spec now gives {short(now)}; resume refuses")


def _check_candidates(ckpt: dict[str, Any], path: Path, full: dict[str, list[list[str]]]) -> None:
    """Per cell type, one list of candidate ops per edge, each a subset of the spec's operations."""
    cands = ckpt["candidates"]
    if set(cands) != set(full):
        raise ResumeRefused(f"{path}: 'candidates' are for cell types {short(sorted(map(str, cands)))}, "
                              f"the search space has {short(sorted(full))}; resume refuses")
    for ct, edges in full.items():
        got = cands[ct]
        if not isinstance(got, list) or len(got) != len(edges):
            raise ResumeRefused(f"{path}: 'candidates' {ct!r}: expected {len(edges)} edge(s), got {_kind(got)}; "
                                  "resume refuses")
        for e, (ops, allowed) in enumerate(zip(got, edges)):
            if not (isinstance(ops, list) and ops and all(isinstance(o, str) and o in allowed for o in ops)):
                raise ResumeRefused(f"{path}: 'candidates' {ct!r} edge {e}: {short(ops)} is not a non-empty list "
                                      f"of the spec's operations {short(allowed)}; resume refuses")


def _try_restore(path: Path, key: str, restore: Callable[[], None]) -> None:
    try:
        restore()
    except Exception as exc:  # noqa: BLE001 - any failure means a state this build cannot restore
        raise ResumeRefused(f"{path}: {key!r} cannot be restored: {cut(str(exc) or type(exc).__name__)}; "
                              "resume refuses") from None


def _check_states(ckpt: dict[str, Any], path: Path) -> None:
    """The RNG and data-order states restore (tried, then the current states put back)."""
    from . import checkpoint

    saved = checkpoint.capture_rng()
    try:
        _try_restore(path, "rng", lambda: checkpoint.restore_rng(ckpt["rng"]))
    finally:
        checkpoint.restore_rng(saved)
    for name in ("train", "val"):
        _try_restore(path, "loader_states", lambda: torch.Generator().set_state(ckpt["loader_states"][name]))


def check_checkpoint(ckpt: dict[str, Any], path: Path, spec: Any, stages: list[tuple[int, int]],
                     full_candidates: dict[str, list[list[str]]]) -> None:
    """Every check of a search checkpoint that needs no supernet: the spec it was written under,
    its keys and their types, its position in the stage plan, its candidates, its RNG states."""
    check_spec(spec, ckpt.get("spec_digest"), ckpt.get("spec"), path)
    _check_keys(ckpt, path)
    _check_plan(ckpt, path, stages)
    _check_position(ckpt, path, stages)
    _check_candidates(ckpt, path, full_candidates)
    _check_states(ckpt, path)


# --- 3. once the stage exists -------------------------------------------------------------------------

def check_step(ckpt_step: int, steps: int, recorded: Any, path: Path) -> None:
    """The step lies inside an epoch of ``steps`` steps, and the epoch has as many steps as when
    the checkpoint was written (else the data order would not replay)."""
    if isinstance(recorded, dict) and _int(recorded.get("steps")) and recorded["steps"] != steps:
        raise ResumeRefused(f"{path}: written with {recorded['steps']} steps per epoch, the data now gives "
                              f"{steps} (the dataset or its split changed); resume refuses")
    if ckpt_step >= steps:
        raise ResumeRefused(f"{path}: 'step' is {ckpt_step}, but an epoch has {steps} step(s) "
                              f"(0 to {steps - 1}); resume refuses")


def check_fits(path: Path, key: str, expected: dict[str, torch.Tensor], found: dict[str, Any], what: str) -> None:
    """``found`` (a state dict) has exactly the keys and shapes of ``expected``."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [f"{k} {list(found[k].shape)} (the supernet's: {list(v.shape)})"
              for k, v in expected.items() if k in found and tuple(found[k].shape) != tuple(v.shape)]
    problems = ([f"missing {_listed(missing)}"] if missing else []) + \
               ([f"unexpected {_listed(extra)}"] if extra else []) + ([f"shape of {_listed(shapes)}"] if shapes else [])
    if problems:
        raise ResumeRefused(f"{path}: {key!r} does not fit {what}: {'; '.join(problems)}; resume refuses")


def load_state(path: Path, key: str, load: Callable[[], Any]) -> None:
    """Load a checkpoint part into a live object; any failure is one line naming ``key``."""
    try:
        load()
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's state that does not fit its object
        raise ResumeRefused(f"{path}: {key!r} does not fit what the spec builds: "
                              f"{cut(str(exc) or type(exc).__name__, 160)}; "
                              "resume refuses") from None


# --- the call of nasreg resume ------------------------------------------------------------------------

def check_resumable(run_dir: Path, spec: Any) -> None:
    """Checks 1 and 2 on ``run_dir``'s checkpoint (none: nothing to check, the run starts
    afresh), for ``spec`` as read from its ``spec.toml``, before anything is built or written.
    Under torchrun the search makes them on every rank instead (rank 0 alone must not refuse)."""
    from . import distributed as ddp
    from .rundir import RunDir
    from .spec import check_stages

    files = RunDir(run_dir)
    if ddp.env_world_size() > 1 or not files.checkpoint.is_file():
        return
    files.read_jsonl(files.METRICS_FILE)  # a damaged journal (bounded, schema-checked): refused now
    ckpt = files.load_checkpoint(kind="search")
    selector = spec.selector.build() if spec.selector is not None else None
    full = spec.search_space.build().full_candidates()
    check_checkpoint(ckpt, files.checkpoint, spec, check_stages(spec, selector), full)
