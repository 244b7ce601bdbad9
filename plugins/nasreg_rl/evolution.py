"""The sampling strategy ``evolution``: regularized (aging) evolution (Real, Aggarwal, Huang and Le,
"Regularized Evolution for Image Classifier Architecture Search", AAAI 2019; AmoebaNet's method).

Algorithm 1 of the paper, over any space that lists its decisions (``decisions()``,
``genotype_from_choices()``, see :mod:`nasreg_nasnet.decisions`):

1. the population is ``population`` (P) children of uniformly random choices, each trained and
   rewarded with its validation accuracy (:mod:`nasreg_rl.children`, the same trainer and executor
   as ``reinforce`` and ``random``);
2. each cycle samples ``sample_size`` (S) members of the population uniformly, with replacement
   (as the paper's reference code does), and the best of the sample (highest reward; ties: the
   first drawn) is the parent; the child is the parent with one mutation, is trained and rewarded,
   joins the population, and the *oldest* member dies (not the worst: the regularization);
3. it stops after ``cycles`` children in all, the initial population included (the paper's C),
   and returns the best child ever trained.

A mutation changes exactly one decision, to another of its choices, so a child is always valid
(a NASNet block's input decision only offers earlier states: no loops). With probability
``identity_probability`` the child is the parent unchanged (it is trained again, with its own
seed; the paper allows such an identity mutation, the default rate 0.05 is ours, the rate used
there was not in the material we had); otherwise a mutation kind is chosen uniformly among the kinds the space's decisions have,
then one decision of that kind uniformly. A space names its kinds with an optional
``decision_kinds()`` (one string per decision of ``decisions()``): ``nasnet-cell`` says
``input`` (the paper's hidden-state mutation), ``op`` (its op mutation) and ``combine`` (present
when ``combine`` offers two methods; AmoebaNet always adds); a space without it has one kind,
every decision alike. Uniform kind, then uniform decision, is the paper's rule (a cell, a pairwise
combination and one of its two elements, uniformly) for the ``nasnet-cell`` space.

Children train ``children_per_round`` at a time (default 1: the paper's sequential algorithm;
the initial population goes in rounds of the same size): a round's children are all bred from the
population as it stands before the round (each from its own tournament), as the paper's
asynchronous workers each breed from the population they see, and join it in index order, each
removing the oldest member. With ``workers`` (or an ``[executor]``), set ``children_per_round``
to the number of children that train at once; the search depends on ``children_per_round``,
never on where children train.

The tournament and mutation draws come from a generator seeded with the run's seed; a resumed
search replays ``children.jsonl`` (children already trained are not trained again), so the
generator draws the same numbers, the population evolves the same way, and the run ends as the
uninterrupted one would.

What the run directory gets besides the files of :mod:`nasreg_rl.strategy` (``children.jsonl``,
``rewards.json``, ``rewards.png``, whose "moving average" is the population's mean reward):

``evolution.jsonl``  one line per child, in birth order: index, round, parent (None in the initial
                     population), mutation (``random``, ``identity`` or the kind mutated) with the
                     decision, its old and new choice, reward, the member that died when it was
                     born (and at what age, in children born since), and the population size
``evolution.json``   the settings, the decision kinds, and the population at the end (index, age,
                     reward)
"""

from __future__ import annotations

from collections import deque
from typing import Annotated, Any

import nasreg
from nasreg import Range

from .strategy import ChildSearch, Count, Positive

__all__ = ["EVOLUTION_FILE", "EVOLUTION_HISTORY", "EvolutionStrategy", "decision_kinds", "mutate", "tournament"]

EVOLUTION_HISTORY = "evolution.jsonl"
EVOLUTION_FILE = "evolution.json"

#: The kind of every decision of a space that does not name kinds.
ANY_KIND = "choice"


def decision_kinds(space: Any, decisions: list[tuple[str, int]]) -> list[str]:
    """One kind per decision: the space's ``decision_kinds()`` if it has one, else all alike."""
    named = getattr(space, "decision_kinds", None)
    if not callable(named):
        return [ANY_KIND] * len(decisions)
    kinds = [str(k) for k in named()]
    if len(kinds) != len(decisions):
        raise nasreg.PluginError(f"search space {getattr(space, 'name', type(space).__name__)!r}: decision_kinds() "
                                 f"gave {len(kinds)} kinds for {len(decisions)} decisions")
    return kinds


def tournament(population: Any, sample_size: int, rng: Any) -> dict[str, Any]:
    """The best of ``sample_size`` members drawn uniformly with replacement (ties: the first drawn)."""
    members = list(population)
    sample = [members[int(i)] for i in rng.integers(len(members), size=sample_size)]
    return max(sample, key=lambda m: m["reward"])


def mutate(choices: list[int], decisions: list[tuple[str, int]], kinds: list[str], rng: Any,
           identity_probability: float = 0.0) -> tuple[list[int], dict[str, Any]]:
    """``choices`` with one decision changed to another of its choices (see the module docstring),
    or unchanged with probability ``identity_probability``; returns the child and how it came:
    ``mutation`` (``identity`` or the kind mutated), ``decision`` (its name), ``old``, ``new``."""
    child = list(choices)
    if identity_probability > 0 and rng.random() < identity_probability:
        return child, {"mutation": "identity", "decision": None, "old": None, "new": None}
    order = list(dict.fromkeys(kinds))  # the kinds, in the order the decisions first show them
    kind = order[int(rng.integers(len(order)))]
    which = [i for i, k in enumerate(kinds) if k == kind]
    d = which[int(rng.integers(len(which)))]
    name, n = decisions[d]
    new = int(rng.integers(n - 1))
    new += new >= child[d]  # one of the n - 1 other choices, uniformly
    old, child[d] = child[d], new
    return child, {"mutation": kind, "decision": name, "old": old, "new": new}


class EvolutionStrategy(ChildSearch):
    """Regularized (aging) evolution over a space's decisions (see the module docstring).

    Keys: ``population`` (P) members, the first P children drawn at random;
    ``sample_size`` (S, at most P) members drawn, with replacement, for each tournament;
    ``cycles`` children in all, the initial population included (the paper's C, more than P);
    ``children_per_round`` children bred from the same population and trained together (1: the
    paper's sequential loop; set it to the number of worker processes); ``identity_probability``
    that a child is its parent unchanged; ``child_epochs``, ``child_batch_size``, ``child_lr``,
    ``child_momentum``, ``child_weight_decay`` and ``child_grad_clip``: each child's training, as
    reinforce's; ``workers`` processes training children in parallel (1: in this process)
    with ``child_threads`` threads each (0: CPUs / workers), unless the spec's ``[executor]`` says
    where children train. Paper scale (CIFAR-10): P = 100, S = 25, C = 20,000.
    """

    strategy_name = "evolution"
    average_label = "population mean reward (after each round)"

    def __init__(self,
                 population: Annotated[int, Range(ge=2, le=1_000_000)] = 40,
                 sample_size: Annotated[int, Range(ge=1, le=1_000_000)] = 10,
                 cycles: Count = 160,
                 children_per_round: Annotated[int, Range(ge=1, le=4096)] = 1,
                 identity_probability: Annotated[float, Range(ge=0, lt=1)] = 0.05,
                 child_epochs: Count = 2,
                 child_batch_size: Annotated[int, Range(ge=1, le=65_536)] = 64,
                 child_lr: Positive = 0.05,
                 child_momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9,
                 child_weight_decay: Annotated[float, Range(ge=0)] = 3e-4,
                 child_grad_clip: Annotated[float, Range(ge=0)] = 5.0,
                 workers: Annotated[int, Range(ge=1, le=1024)] = 1,
                 child_threads: Annotated[int, Range(ge=0, le=1024)] = 0):
        if sample_size > population:
            raise ValueError(f"sample_size: expected at most population ({population}), got {sample_size}")
        if cycles <= population:
            raise ValueError(f"cycles: expected more than population ({population}): cycles counts every "
                             f"child, the initial population included (the paper's C), got {cycles}")
        super().__init__(updates=0, children_per_update=children_per_round, child_epochs=child_epochs,
                         child_batch_size=child_batch_size, child_lr=child_lr, child_momentum=child_momentum,
                         child_weight_decay=child_weight_decay, child_grad_clip=child_grad_clip,
                         workers=workers, child_threads=child_threads)
        self.population = population
        self.sample_size = sample_size
        self.cycles = cycles
        self.children_per_round = children_per_round
        self.identity_probability = identity_probability
        self.updates = len(self.round_sizes())

    def round_sizes(self) -> list[int]:
        """The initial population, then the evolution cycles, each in rounds of ``children_per_round``."""
        k = self.children_per_round

        def rounds(n: int) -> list[int]:
            return [k] * (n // k) + ([n % k] if n % k else [])

        return rounds(self.population) + rounds(self.cycles - self.population)

    def check_spec(self, spec: Any) -> None:
        super().check_spec(spec)
        if spec.executor is None and self.workers > self.children_per_round:
            import warnings

            warnings.warn(f"[strategy] workers: {self.workers} worker processes but children_per_round = "
                          f"{self.children_per_round}: only {self.children_per_round} child trains at a time "
                          "(set children_per_round to the workers)", stacklevel=2)

    # -- the ChildSearch steps ----------------------------------------------------------------------
    def start(self, run: Any, decisions: list[tuple[str, int]]) -> None:
        import numpy as np

        self.decisions = decisions
        self.kinds = decision_kinds(run.space, decisions)
        self.rng = np.random.default_rng(run.seed)
        self.members: deque[dict[str, Any]] = deque()  # oldest first
        self.born = 0  # children proposed so far: the next child's index
        self.pending: list[dict[str, Any]] = []
        self.history: list[dict[str, Any]] = []

    def propose(self, m: int) -> list[list[int]]:
        self.pending = []
        for _ in range(m):
            index = self.born
            self.born += 1
            if index < self.population:
                choices = [int(self.rng.integers(n)) for _name, n in self.decisions]
                self.pending.append({"index": index, "parent": None, "mutation": "random", "decision": None,
                                     "old": None, "new": None, "choices": choices})
                continue
            parent = tournament(self.members, self.sample_size, self.rng)
            choices, how = mutate(parent["choices"], self.decisions, self.kinds, self.rng,
                                  self.identity_probability)
            self.pending.append({"index": index, "parent": parent["index"], **how, "choices": choices})
        return [p["choices"] for p in self.pending]

    def learn(self, update: int, choices: list[list[int]], rewards: list[float]) -> dict[str, Any]:
        import numpy as np

        for born, reward in zip(self.pending, rewards):
            self.members.append({"index": born["index"], "choices": born["choices"], "reward": float(reward)})
            dead = self.members.popleft() if len(self.members) > self.population else None
            self.history.append({
                "index": born["index"], "round": update, "parent": born["parent"], "mutation": born["mutation"],
                "decision": born["decision"], "old": born["old"], "new": born["new"], "reward": float(reward),
                "died": None if dead is None else dead["index"],
                "died_at_age": None if dead is None else born["index"] - dead["index"],
                "population": len(self.members), "choices": born["choices"]})
        rewards_now = [m["reward"] for m in self.members]
        return {"moving_average": float(np.mean(rewards_now)), "population_best": float(max(rewards_now)),
                "population": len(self.members)}

    def finish(self, run: Any, space: Any) -> None:
        files = nasreg.RunDir(run.run_dir)
        files.write_jsonl(EVOLUTION_HISTORY, self.history)
        files.write_json(EVOLUTION_FILE, {
            "strategy": self.strategy_name, "population_size": self.population, "sample_size": self.sample_size,
            "cycles": self.cycles, "children_per_round": self.children_per_round,
            "identity_probability": self.identity_probability,
            "decisions": [{"name": n, "choices": k, "kind": kind} for (n, k), kind in zip(self.decisions, self.kinds)],
            "population": [{"index": m["index"], "age": self.born - 1 - m["index"], "reward": m["reward"]}
                           for m in self.members],
        })
