"""The sampling strategies ``reinforce`` and ``random``: sample architectures, train each as a child.

Both search any space that lists its discrete decisions (``decisions()``) and builds a genotype
from one choice per decision (``genotype_from_choices()``): ``nasnet-cell`` and ``nas-layers``
(see :mod:`nasreg_nasnet.decisions`). Both spend the same budget, ``updates`` rounds of
``children_per_update`` children (m), each child trained from scratch and rewarded with its
validation accuracy (:mod:`nasreg_rl.children`). They differ only in how a round's children are
chosen:

* ``reinforce`` (Zoph and Le, 2017): an LSTM controller samples them
  (:class:`nasreg_rl.controller.Controller`) and, after the round, takes one REINFORCE step on
  their rewards with a moving-average baseline and an optional entropy bonus
  (:func:`nasreg_rl.controller.reinforce_update`, Adam at ``controller_lr``);
* ``random``: every choice uniformly at random, the baseline every NAS method should beat.

The genotype returned is the best child's (highest reward; ties: the earliest), with provenance:
strategy, seed, spec hash, reward, child index and choices.

What a run directory gets (besides the core's ``spec.toml``, ``genotype.json``, ``summary.json``):

``children.jsonl``   one line per child: index, update, choices, genotype, reward (validation
                     accuracy), validation and train loss, train accuracy, parameters, seconds,
                     seed, whether it diverged
``rewards.json``     the reward curve: per update the children's rewards, their mean and maximum,
                     the moving average (reinforce: the baseline) and the best reward so far
``rewards.png``      reward per child, the moving average and the best so far
``controller.json``  reinforce: the decisions, per update the loss, baseline and entropy, and the
                     controller's most likely architecture at the end with its step probabilities
``controller.pt``    reinforce: the controller's weights at the end (``torch.load(weights_only=True)``)

``children.jsonl`` is also a journal: ``nasreg resume RUN_DIR`` on a search that was stopped
replays it (children already trained are not trained again: with the same seeds the controller
samples the same children and gets the same rewards) and goes on from the first missing child.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Annotated, Any, Sequence

import nasreg
from nasreg import Range, SpecError

if TYPE_CHECKING:  # pragma: no cover - the children and the controller (torch) load when a search runs
    from .children import ChildConfig

__all__ = ["ChildSearch", "RandomStrategy", "ReinforceStrategy", "space_decisions"]

CHILDREN_FILE = "children.jsonl"
REWARDS_FILE = "rewards.json"
REWARDS_PLOT = "rewards.png"
CONTROLLER_FILE = "controller.json"
CONTROLLER_WEIGHTS = "controller.pt"

Count = Annotated[int, Range(ge=1, le=1_000_000)]
Positive = Annotated[float, Range(gt=0, le=1e3)]


def space_decisions(space: Any, name: str, where: str = "") -> list[tuple[str, int]]:
    """The decisions of ``space``, or a :class:`SpecError` saying it cannot be sampled (``where``:
    the spec file, for the message)."""
    where = f"{where}: " if where else ""
    if not (callable(getattr(space, "decisions", None)) and callable(getattr(space, "genotype_from_choices", None))):
        raise SpecError(f"{where}[search_space] name: search space {name!r} lists no discrete decisions "
                        "(decisions() and genotype_from_choices()), so a sampling strategy cannot search it; "
                        "use 'nasnet-cell', 'nas-layers' or 'darts-cell', or a gradient strategy such as 'darts'")
    decisions = [(str(n), int(k)) for n, k in space.decisions()]
    if not decisions:
        raise SpecError(f"{where}[search_space]: search space {name!r} has nothing to decide with these keys "
                        "(every decision has a single choice)")
    return decisions


def _mean(values: Sequence[Any]) -> float:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else float("nan")


class ChildSearch(nasreg.SamplingStrategy):
    """The loop both strategies share; subclasses choose the children and learn from rewards."""

    #: The registry name, recorded in the provenance.
    strategy_name = "child-search"
    #: What the rounds' ``moving_average`` is, as ``rewards.png``'s legend names it.
    average_label = "moving average (after each update)"

    def __init__(self, *, updates: int, children_per_update: int, child_epochs: int, child_batch_size: int,
                 child_lr: float, child_momentum: float, child_weight_decay: float, child_grad_clip: float,
                 workers: int, child_threads: int):
        self.updates = updates
        self.children_per_update = children_per_update
        self.child_epochs = child_epochs
        self.child_batch_size = child_batch_size
        self.child_lr = child_lr
        self.child_momentum = child_momentum
        self.child_weight_decay = child_weight_decay
        self.child_grad_clip = child_grad_clip
        self.workers = workers
        self.child_threads = child_threads

    # -- what subclasses implement -----------------------------------------------------------------
    def start(self, run: Any, decisions: list[tuple[str, int]]) -> None:
        raise NotImplementedError

    def propose(self, m: int) -> list[list[int]]:
        raise NotImplementedError

    def learn(self, update: int, choices: list[list[int]], rewards: list[float]) -> dict[str, Any]:
        """Learn from a round's rewards; returns at least ``moving_average``."""
        raise NotImplementedError

    def finish(self, run: Any, space: Any) -> None:
        """Write the strategy's own files into the run directory."""

    def policy_weights(self) -> int:
        """How many trainable weights the policy has (for the progress display)."""
        return 0

    def round_sizes(self) -> list[int]:
        """How many children each round proposes (``propose(m)``, then ``learn``): by default
        ``updates`` rounds of ``children_per_update``; a strategy whose rounds differ in size (an
        initial population, then smaller rounds) overrides it. Child indices run on across rounds."""
        return [self.children_per_update] * self.updates

    # -- the loop --------------------------------------------------------------------------------
    def check_spec(self, spec: Any) -> None:
        """Refuse ``workers > 1`` beside an ``[executor]`` table: the table says where children
        train, ``workers`` sizes only the default local executor (one :class:`SpecError` line)."""
        if spec.executor is not None and self.workers > 1:
            raise SpecError(f"{spec.path}: [strategy] workers: {self.workers} sizes the default local executor, "
                            f"but [executor] name = {spec.executor.name!r} says where the children train; "
                            "drop workers (or give the executor its own keys, e.g. the local executor's workers)")

    def executor(self, spec: Any) -> Any:
        """The executor the children train through: the spec's ``[executor]``, built, or None (the
        local executor with ``workers`` and ``child_threads``)."""
        return spec.executor.build() if spec.executor is not None else None

    def child_config(self, run: Any) -> ChildConfig:
        from .children import ChildConfig

        return ChildConfig(epochs=self.child_epochs, batch_size=self.child_batch_size, lr=self.child_lr,
                           momentum=self.child_momentum, weight_decay=self.child_weight_decay,
                           grad_clip=self.child_grad_clip, eval_batch_norm=run.spec.search.eval_batch_norm,
                           threads=self.child_threads)

    def search(self, run: Any, bundle: Any, reporter: Any) -> dict[str, Any]:
        from .children import ChildTask, ChildTrainer, child_seed
        from .plots import plot_rewards

        self.check_spec(run.spec)
        space = run.space
        decisions = space_decisions(space, run.spec.search_space.name, str(run.spec.path))
        self.start(run, decisions)
        journal = _Journal(nasreg.RunDir(run.run_dir), CHILDREN_FILE, run.spec.digest())
        sizes = self.round_sizes()
        children: list[dict[str, Any]] = []
        rounds: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        t_start = time.perf_counter()
        # The core's progress display, read as: "epochs" are updates, "steps" children, "weights"
        # the policy's (the controller's; none for random search), "val acc" a round's mean reward.
        reporter.stage_start(0, len(sizes), max(sizes), self.policy_weights())
        first = 0
        with ChildTrainer(run, bundle, self.child_config(run), self.workers, self.executor(run.spec)) as trainer:
            for update, m in enumerate(sizes):
                t_round = time.perf_counter()
                choices = [list(map(int, c)) for c in self.propose(m)]
                results: list[dict[str, Any] | None] = [None] * m
                tasks, where = [], []
                for k, c in enumerate(choices):
                    index = first + k
                    genotype = space.genotype_from_choices(c)
                    seed = child_seed(run.seed, index)
                    old = journal.get(index, c, seed)
                    if old is not None:
                        results[k] = old
                        continue
                    tasks.append(ChildTask(index, genotype.to_dict(), seed, trainer.device_for(index)))
                    where.append(k)
                for k, task, out in zip(where, tasks, trainer.train(tasks)):
                    record = {"index": task.index, "update": update, "child": k, "choices": choices[k],
                              "seed": task.seed, **out, "genotype": task.genotype, "spec_hash": journal.spec_hash}
                    journal.append(record)
                    results[k] = record
                    reporter.step(k + 1, {"train_loss": out.get("train_loss") or float("nan")})
                done = [r for r in results if r is not None]
                rewards = [float(r["reward"]) for r in done]
                stats = self.learn(update, choices, rewards)
                children.extend(done)
                for r in done:
                    if best is None or r["reward"] > best["reward"]:
                        best = r
                assert best is not None
                rounds.append({"update": update, "first_child": first, "last_child": first + m - 1,
                               "rewards": rewards, "mean_reward": _mean(rewards), "max_reward": max(rewards),
                               "best_so_far": best["reward"], "seconds": time.perf_counter() - t_round, **stats})
                first += m
                self._write_rewards(run, children, rounds)
                reporter.epoch_end({"train_acc": _mean([r.get("train_acc") for r in done]),
                                    "val_acc": _mean(rewards), "val_loss": _mean([r.get("val_loss") for r in done])})
        reporter.stage_end(0)
        assert best is not None
        self.finish(run, space)
        plot_rewards(children, rounds, run.run_dir / REWARDS_PLOT,
                     title=f"{self.strategy_name} on {run.spec.search_space.name}",
                     warn=getattr(reporter, "message", print), average_label=self.average_label)
        genotype = space.genotype_from_choices(best["choices"])
        genotype.provenance = {
            "spec_hash": run.spec.digest(), "nasreg_version": nasreg.__version__, "seed": run.seed,
            "strategy": self.strategy_name, "reward": best["reward"], "child": best["index"],
            "choices": best["choices"], "children": len(children),
        }
        size = getattr(space, "search_space_size", None)
        return {
            "genotype": genotype, "strategy": self.strategy_name, "children": len(children),
            "updates": len(sizes), "children_per_update": self.children_per_update, "best_reward": best["reward"],
            "best_child": best["index"], "final_val_acc": best["reward"],
            "mean_reward_last_update": rounds[-1]["mean_reward"],
            "search_space_log10_size": math.log10(size()) if callable(size) else None,
            "children_seconds": sum(float(c.get("seconds", 0.0)) for c in children),
            "search_seconds": time.perf_counter() - t_start,
            # What `nasreg run` prints for this search, in place of a supernet's stage table.
            "report": [f"{self.strategy_name}: {len(children)} children trained, best reward "
                       f"{best['reward']:.4f} (child {best['index']})"],
        }

    def _write_rewards(self, run: Any, children: list[dict[str, Any]], rounds: list[dict[str, Any]]) -> None:
        nasreg.RunDir(run.run_dir).write_json(REWARDS_FILE, {
            "strategy": self.strategy_name, "children_per_update": self.children_per_update,
            "children": [{"index": c["index"], "update": c["update"], "reward": c["reward"]} for c in children],
            "updates": rounds,
        })


class _Journal:
    """``children.jsonl``: appended one child at a time; on a resumed run, what it already holds.

    A last line cut by a kill is dropped (and the file rewritten without it, so the next append
    starts a line of its own); damage anywhere else is a one-line error naming the file and line.
    Each child records the hash of the spec it was trained under: a journal of another spec
    (``spec.toml`` edited after the run) is refused before anything is replayed or rewritten."""

    def __init__(self, files: Any, name: str, spec_hash: str):
        self.files, self.name, self.spec_hash = files, name, spec_hash
        records = files.read_jsonl(name)
        self._check_spec(records)
        if files.exists(name) and not files.file(name).read_bytes().endswith(b"\n"):
            files.write_jsonl(name, records)
        self.done: dict[int, dict[str, Any]] = {
            rec["index"]: rec for rec in records if isinstance(rec.get("index"), int)}

    def _check_spec(self, records: list[dict[str, Any]]) -> None:
        """Refuse children trained under another spec (journals from before the hash: accepted)."""
        other = next((r for r in records if "spec_hash" in r and r["spec_hash"] != self.spec_hash), None)
        if other is not None:
            raise nasreg.RunDirError(
                f"{self.files.file(self.name)}: child {other.get('index')!r} was trained under another spec "
                f"(hash {str(other['spec_hash'])[:16]!r}, spec.toml now {self.spec_hash!r}): spec.toml was edited "
                "after the run; resume refuses (restore the spec, or start a new run)")

    def get(self, index: int, choices: list[int], seed: int) -> dict[str, Any] | None:
        rec = self.done.get(index)
        if rec is not None and rec.get("choices") == choices and rec.get("seed") == seed:
            return rec
        return None

    def append(self, record: dict[str, Any]) -> None:
        self.files.append_jsonl(self.name, record)
        self.done[record["index"]] = record


# --- the strategies --------------------------------------------------------------------------------

class ReinforceStrategy(ChildSearch):
    """NAS with reinforcement learning: an LSTM controller trained with REINFORCE on child rewards.

    Keys: ``updates`` controller updates of ``children_per_update`` (m) children each;
    ``hidden_size`` of the LSTM; ``controller_lr`` (Adam); ``baseline_decay`` of the
    moving-average baseline; ``entropy_weight`` (entropy bonus, 0: none); the children's training
    (``child_epochs``, ``child_batch_size``, ``child_lr``, ``child_momentum``,
    ``child_weight_decay``, ``child_grad_clip``); ``workers`` processes training children in
    parallel (1: in this process) with ``child_threads`` threads each (0: CPUs / workers), unless
    the spec's ``[executor]`` says where children train (``workers`` then stays 1).
    """

    strategy_name = "reinforce"

    def __init__(self,
                 updates: Count = 20,
                 children_per_update: Count = 8,
                 hidden_size: Annotated[int, Range(ge=1, le=4096)] = 64,
                 controller_lr: Positive = 6e-4,
                 baseline_decay: Annotated[float, Range(ge=0, lt=1)] = 0.95,
                 entropy_weight: Annotated[float, Range(ge=0, le=100)] = 0.0,
                 child_epochs: Count = 2,
                 child_batch_size: Annotated[int, Range(ge=1, le=65_536)] = 64,
                 child_lr: Positive = 0.05,
                 child_momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9,
                 child_weight_decay: Annotated[float, Range(ge=0)] = 3e-4,
                 child_grad_clip: Annotated[float, Range(ge=0)] = 5.0,
                 workers: Annotated[int, Range(ge=1, le=1024)] = 1,
                 child_threads: Annotated[int, Range(ge=0, le=1024)] = 0):
        super().__init__(updates=updates, children_per_update=children_per_update, child_epochs=child_epochs,
                         child_batch_size=child_batch_size, child_lr=child_lr, child_momentum=child_momentum,
                         child_weight_decay=child_weight_decay, child_grad_clip=child_grad_clip,
                         workers=workers, child_threads=child_threads)
        self.hidden_size = hidden_size
        self.controller_lr = controller_lr
        self.baseline_decay = baseline_decay
        self.entropy_weight = entropy_weight

    def start(self, run: Any, decisions: list[tuple[str, int]]) -> None:
        import torch

        from .controller import Controller

        self.decisions = decisions
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run.seed)
            self.controller = Controller([n for _name, n in decisions], hidden_size=self.hidden_size)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.controller_lr)
        self.generator = torch.Generator().manual_seed(run.seed)
        self.baseline: float | None = None
        self.history: list[dict[str, Any]] = []

    def propose(self, m: int) -> list[list[int]]:
        return self.controller.sample(m, self.generator).tolist()

    def policy_weights(self) -> int:
        return sum(p.numel() for p in self.controller.parameters())

    def learn(self, update: int, choices: list[list[int]], rewards: list[float]) -> dict[str, Any]:
        from .controller import reinforce_update

        stats = reinforce_update(self.controller, self.optimizer, choices, rewards, self.baseline,
                                 decay=self.baseline_decay, entropy_weight=self.entropy_weight)
        self.baseline = stats["baseline"]
        record = {"update": update, "loss": stats["loss"], "baseline_used": stats["baseline_used"],
                  "baseline": stats["baseline"], "entropy": stats["entropy"], "log_probs": stats["log_probs"],
                  "advantages": stats["advantages"]}
        self.history.append(record)
        return {"moving_average": stats["baseline"], "loss": stats["loss"], "entropy": stats["entropy"]}

    def finish(self, run: Any, space: Any) -> None:
        import io

        import numpy as np
        import torch

        choices, probs = self.controller.greedy()
        files = nasreg.RunDir(run.run_dir)
        files.write_json(CONTROLLER_FILE, {
            "strategy": self.strategy_name, "hidden_size": self.hidden_size, "controller_lr": self.controller_lr,
            "baseline_decay": self.baseline_decay, "entropy_weight": self.entropy_weight,
            "decisions": [{"name": n, "choices": k} for n, k in self.decisions],
            "updates": self.history,
            "most_likely": {"choices": choices, "probabilities": probs,
                            "log_prob": float(np.sum(np.log(np.maximum(probs, 1e-30)))),
                            "genotype": space.genotype_from_choices(choices).to_dict()},
        })
        buf = io.BytesIO()
        torch.save(self.controller.state_dict(), buf)
        files.write_bytes(CONTROLLER_WEIGHTS, buf.getvalue())


class RandomStrategy(ChildSearch):
    """Random search: every choice uniform, with reinforce's child budget (the NAS baseline).

    Keys: ``updates`` rounds of ``children_per_update`` children (the same budget as reinforce's),
    ``average_decay`` of the reported moving average of the rewards, and the children's training
    keys as reinforce's (``child_*``, ``workers``, ``child_threads``).
    """

    strategy_name = "random"

    def __init__(self,
                 updates: Count = 20,
                 children_per_update: Count = 8,
                 average_decay: Annotated[float, Range(ge=0, lt=1)] = 0.95,
                 child_epochs: Count = 2,
                 child_batch_size: Annotated[int, Range(ge=1, le=65_536)] = 64,
                 child_lr: Positive = 0.05,
                 child_momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9,
                 child_weight_decay: Annotated[float, Range(ge=0)] = 3e-4,
                 child_grad_clip: Annotated[float, Range(ge=0)] = 5.0,
                 workers: Annotated[int, Range(ge=1, le=1024)] = 1,
                 child_threads: Annotated[int, Range(ge=0, le=1024)] = 0):
        super().__init__(updates=updates, children_per_update=children_per_update, child_epochs=child_epochs,
                         child_batch_size=child_batch_size, child_lr=child_lr, child_momentum=child_momentum,
                         child_weight_decay=child_weight_decay, child_grad_clip=child_grad_clip,
                         workers=workers, child_threads=child_threads)
        self.average_decay = average_decay

    def start(self, run: Any, decisions: list[tuple[str, int]]) -> None:
        import numpy as np

        self.sizes = [n for _name, n in decisions]
        self.rng = np.random.default_rng(run.seed)
        self.average: float | None = None

    def propose(self, m: int) -> list[list[int]]:
        return [[int(self.rng.integers(n)) for n in self.sizes] for _ in range(m)]

    def learn(self, update: int, choices: list[list[int]], rewards: list[float]) -> dict[str, Any]:
        import numpy as np

        mean = float(np.mean(rewards))
        self.average = mean if self.average is None else (
            self.average_decay * self.average + (1 - self.average_decay) * mean)
        return {"moving_average": self.average}
