"""The sampling strategy ``enas``: Efficient NAS via parameter sharing (Pham et al., ICML 2018).

ENAS's micro search on a space with a weight-sharing supernet and discrete decisions (the
``darts`` plugin's ``darts-cell``): an LSTM controller (:class:`nasreg_rl.controller.Controller`)
emits, per cell type and node, two distinct inputs among the earlier nodes and an op for each;
every child it samples is a sub-graph of one supernet and uses that supernet's weights. An epoch
alternates two phases, as ENAS does:

1. **shared weights**: for every batch of the search's train split, the controller samples a
   child, the supernet computes only that child's ops (its :class:`nasreg.EdgeWeighting` gives each
   chosen edge its chosen op and every other edge no op at all) and one SGD step (momentum,
   weight decay, gradient clipping, a cosine learning rate from ``w_lr`` to ``w_lr_min`` over the
   epochs) updates the shared weights it used;
2. **controller**: ``controller_steps`` REINFORCE updates (:func:`nasreg_rl.controller.reinforce_update`,
   Adam at ``controller_lr``, a moving-average baseline with ``baseline_decay``), each on
   ``controller_aggregate`` sampled children; a child's reward is its accuracy with the shared
   weights on one batch of the validation split, plus ``entropy_weight`` times its sample entropy
   (ENAS adds the entropy to the reward). The logits are shaped as ENAS's: divided by
   ``temperature``, then ``tanh_constant * tanh(.)`` (``tanh_constant / op_tanh_reduce`` for op
   decisions; ``tanh_constant = 0``: no tanh).

After the last epoch the controller samples ``final_samples`` cells, each scored on the same
validation batch with the shared weights (ENAS's derivation). ENAS retrains the best of them from
scratch; here the ``finalists`` best distinct cells are trained briefly from scratch as children
of the RL plugin (:class:`nasreg_rl.children.ChildTrainer`: through the local executor, in
process or ``workers`` processes, or the spec's ``[executor]`` such as Ray), ``child_epochs``
each, in a network of ``child_cells`` cells and ``child_channels`` channels (0: the search
supernet's), and the best by validation accuracy is the genotype.

BatchNorm in the rewards follows ``[search] eval_batch_norm`` (``batch``: each batch's statistics,
running averages untouched; ``running``: eval mode). Deviations from ENAS's code, on purpose: the
supernet's cell output concatenates every intermediate node (the ``darts-cell`` genotype), not only
the unused ones; a node's two inputs are distinct edges; the controller has one softmax head per
decision instead of ENAS's attention over the earlier nodes; the learning rate is one cosine, not
cosine with warm restarts.

What a run directory gets (besides ``spec.toml``, ``genotype.json``, ``summary.json``):

``enas.jsonl``          one line per epoch: learning rate, train loss and accuracy of the sampled
                        children, mean reward, baseline, controller loss and entropy, seconds
``samples.json``        the final samples: choices, genotype, reward with the shared weights
``finalists.jsonl``     the finalists trained from scratch (the RL children's fields)
``controller.json``     the decisions, per controller update its loss, baseline and entropy, and the
                        controller's most likely cell at the end
``controller.pt``       the controller's weights at the end
``enas_checkpoint.pt``  the search at the end of the last finished epoch (shared weights, their
                        optimizer, the controller and its optimizer, the baseline, the data order
                        and every random stream): ``nasreg resume RUN_DIR`` continues from it, and
                        ``finalists.jsonl`` is replayed, with the results of an uninterrupted run
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from typing import Annotated, Any, Iterator

import nasreg
from nasreg import Range

from .strategy import ChildSearch, _Journal, space_decisions

__all__ = ["EnasStrategy", "child_active_ops"]

EPOCHS_FILE = "enas.jsonl"
SAMPLES_FILE = "samples.json"
FINALISTS_FILE = "finalists.jsonl"
CONTROLLER_FILE = "controller.json"
CONTROLLER_WEIGHTS = "controller.pt"
CHECKPOINT_FILE = "enas_checkpoint.pt"

Count = Annotated[int, Range(ge=1, le=1_000_000)]
Positive = Annotated[float, Range(gt=0, le=1e3)]
Fraction = Annotated[float, Range(ge=0, lt=1)]
NonNegative = Annotated[float, Range(ge=0, le=1e3)]


def child_active_ops(space: Any, candidates: Any, genotype: nasreg.Genotype) -> dict[str, list[list[int]]]:
    """Per cell type and edge of ``space``, the candidate indices the child ``genotype`` computes:
    its op on the edges it keeps, nothing (an empty list) on the others."""
    out: dict[str, list[list[int]]] = {}
    for ct, edges in space.edges().items():
        active: list[list[int]] = [[] for _ in edges]
        for e in genotype.cells[ct].edges:
            k = edges.index((e.input, e.node))
            active[k].append(candidates[ct][k].index(e.op))
        out[ct] = active
    return out


class EnasStrategy(nasreg.SamplingStrategy):
    """ENAS: a controller samples cells that share one supernet's weights; the best finalist wins.

    Keys (paper: Pham et al. 2018; ref: the authors' ``cifar10_micro_search.sh``): ``epochs`` of
    alternating training (paper 150); the shared weights' SGD: ``w_lr`` to ``w_lr_min`` cosine
    (ref 0.05, 0.0005), ``w_momentum`` 0.9, ``w_weight_decay`` (ref 1e-4), ``w_grad_clip`` (ref
    5); the controller: ``controller_steps`` updates per epoch (ref 30) of
    ``controller_aggregate`` children each (ref 10), ``hidden_size`` (paper 100; here 64),
    ``controller_lr`` (paper 0.00035; ref 0.0035), ``baseline_decay`` (ref 0.99),
    ``entropy_weight`` (paper 1e-4), ``temperature`` (paper 5), ``tanh_constant`` (paper 2.5; ref
    1.1; 0: none), ``op_tanh_reduce`` (ref 2.5); the derivation: ``final_samples`` cells scored
    on a validation batch, the ``finalists`` best trained from scratch with the children's keys
    (``child_*``, ``child_cells`` and ``child_channels``, 0: the supernet's), ``workers`` and
    ``child_threads`` as reinforce's. The batch size is ``[data] batch_size`` (ref 160).
    """

    strategy_name = "enas"

    def __init__(self,
                 epochs: Count = 10,
                 w_lr: Positive = 0.05,
                 w_lr_min: NonNegative = 0.0005,
                 w_momentum: Fraction = 0.9,
                 w_weight_decay: NonNegative = 1e-4,
                 w_grad_clip: NonNegative = 5.0,
                 controller_steps: Count = 30,
                 controller_aggregate: Count = 10,
                 hidden_size: Annotated[int, Range(ge=1, le=4096)] = 64,
                 controller_lr: Positive = 3.5e-4,
                 baseline_decay: Fraction = 0.99,
                 entropy_weight: NonNegative = 1e-4,
                 temperature: Positive = 5.0,
                 tanh_constant: NonNegative = 2.5,
                 op_tanh_reduce: Positive = 2.5,
                 final_samples: Count = 10,
                 finalists: Count = 2,
                 child_epochs: Count = 2,
                 child_batch_size: Annotated[int, Range(ge=1, le=65_536)] = 64,
                 child_lr: Positive = 0.05,
                 child_momentum: Fraction = 0.9,
                 child_weight_decay: NonNegative = 3e-4,
                 child_grad_clip: NonNegative = 5.0,
                 child_cells: Annotated[int, Range(ge=0, le=100)] = 0,
                 child_channels: Annotated[int, Range(ge=0, le=1024)] = 0,
                 workers: Annotated[int, Range(ge=1, le=1024)] = 1,
                 child_threads: Annotated[int, Range(ge=0, le=1024)] = 0):
        if finalists > final_samples:
            raise ValueError(f"finalists: {finalists} finalists cannot come from {final_samples} final_samples")
        if w_lr_min > w_lr:
            raise ValueError(f"w_lr_min: {w_lr_min} is above w_lr ({w_lr})")
        self.epochs, self.w_lr, self.w_lr_min = epochs, w_lr, w_lr_min
        self.w_momentum, self.w_weight_decay, self.w_grad_clip = w_momentum, w_weight_decay, w_grad_clip
        self.controller_steps, self.controller_aggregate = controller_steps, controller_aggregate
        self.hidden_size, self.controller_lr, self.baseline_decay = hidden_size, controller_lr, baseline_decay
        self.entropy_weight, self.temperature = entropy_weight, temperature
        self.tanh_constant, self.op_tanh_reduce = tanh_constant, op_tanh_reduce
        self.final_samples, self.finalists = final_samples, finalists
        self.child_epochs, self.child_batch_size, self.child_lr = child_epochs, child_batch_size, child_lr
        self.child_momentum, self.child_weight_decay = child_momentum, child_weight_decay
        self.child_grad_clip, self.child_cells, self.child_channels = child_grad_clip, child_cells, child_channels
        self.workers, self.child_threads = workers, child_threads

    # -- pieces (tested on their own) ---------------------------------------------------------------
    def build(self, run: Any, bundle: Any) -> None:
        """The supernet, the controller, their optimizers and the random streams (fresh state)."""
        import torch

        from .controller import Controller

        space = run.space
        self.decisions = space_decisions(space, run.spec.search_space.name, str(run.spec.path))
        self.candidates = space.full_candidates()
        self.model = space.build_supernet(self.candidates, ops=run.registries.operations,
                                          in_channels=bundle.in_channels, num_classes=bundle.num_classes).to(run.device)
        self.model.weighting = self._weighting
        self._ones = {ct: [torch.ones(len(c), device=run.device) for c in edges]
                      for ct, edges in self.candidates.items()}
        self._mix: dict[str, tuple[list[Any], list[list[int]]]] = {}
        tanh = [None if self.tanh_constant == 0 else
                self.tanh_constant / (self.op_tanh_reduce if " op " in f" {name} " else 1.0)
                for name, _n in self.decisions]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(run.seed)
            self.controller = Controller([n for _name, n in self.decisions], hidden_size=self.hidden_size,
                                         temperature=self.temperature, tanh_constant=tanh)
        self.w_optimizer = torch.optim.SGD(self.model.weight_parameters(), lr=self.w_lr, momentum=self.w_momentum,
                                           weight_decay=self.w_weight_decay)
        self.c_optimizer = torch.optim.Adam(self.controller.parameters(), lr=self.controller_lr)
        self.generator = torch.Generator().manual_seed(run.seed)
        self.baseline: float | None = None
        self.history: list[dict[str, Any]] = []

    def _weighting(self, cell_type: str, alphas: list[Any], training: bool) -> tuple[list[Any], list[list[int]]]:
        return self._mix[cell_type]

    def use_child(self, choices: list[int]) -> nasreg.Genotype:
        """Make the supernet compute the child of ``choices`` (until the next call); its genotype."""
        genotype = self.space.genotype_from_choices(choices)
        active = child_active_ops(self.space, self.candidates, genotype)
        self._mix = {ct: (self._ones[ct], active[ct]) for ct in active}
        return genotype

    def sample(self, m: int) -> list[list[int]]:
        return self.controller.sample(m, self.generator).tolist()

    def lr_at(self, epoch: int) -> float:
        """The shared weights' learning rate in ``epoch``: a cosine from ``w_lr`` to ``w_lr_min``."""
        return self.w_lr_min + (self.w_lr - self.w_lr_min) * (1 + math.cos(math.pi * epoch / self.epochs)) / 2

    def train_shared(self, epoch: int, loader: Any, device: Any, reporter: Any) -> dict[str, float]:
        """Phase 1: one SGD step on the shared weights per train batch, each through a sampled child."""
        import torch
        import torch.nn.functional as F

        for group in self.w_optimizer.param_groups:
            group["lr"] = self.lr_at(epoch)
        self.model.train()
        params = self.model.weight_parameters()
        loss_sum, correct, count = 0.0, 0, 0
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            self.use_child(self.sample(1)[0])
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise nasreg.DivergenceError(f"training diverged: the shared weights' loss is {value} at "
                                             f"epoch {epoch}, step {i}; try a lower [strategy] w_lr")
            self.w_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.w_grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, self.w_grad_clip)
            self.w_optimizer.step()
            loss_sum += value * y.numel()
            correct += int((logits.argmax(1) == y).sum())
            count += y.numel()
            reporter.step(i + 1, {"train_loss": value})
        return {"train_loss": loss_sum / max(count, 1), "train_acc": correct / max(count, 1)}

    @contextmanager
    def scoring(self) -> Iterator[None]:
        """Score children: no gradients; BatchNorm as ``[search] eval_batch_norm`` says (``batch``:
        each batch's statistics, the running averages left as they were)."""
        import torch
        from torch import nn

        self.model.eval()
        saved = []
        if self.batch_stats:
            for m in self.model.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.train()
                    saved.append((m, m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()))
                    m.momentum = 0.0
        try:
            with torch.no_grad():
                yield
        finally:
            for m, momentum, tracked in saved:
                m.momentum = momentum
                if tracked is not None:
                    m.num_batches_tracked.copy_(tracked)
            self.model.train()

    def reward(self, choices: list[int], batch: Any, device: Any) -> float:
        """The accuracy of the child ``choices`` on ``batch`` with the shared weights."""
        x, y = (t.to(device) for t in batch)
        self.use_child(choices)
        with self.scoring():
            return float((self.model(x).argmax(1) == y).float().mean())

    def train_controller(self, epoch: int, val_loader: Any, device: Any) -> dict[str, float]:
        """Phase 2: ``controller_steps`` REINFORCE updates of ``controller_aggregate`` children,
        each rewarded on its own validation batch (plus the entropy bonus)."""
        import torch

        from .controller import reinforce_update

        batches = _cycle(val_loader)
        stats: list[dict[str, Any]] = []
        accs: list[float] = []
        for step in range(self.controller_steps):
            choices = self.sample(self.controller_aggregate)
            acc = [self.reward(c, next(batches), device) for c in choices]
            with torch.no_grad():
                _, entropy = self.controller.log_prob(torch.as_tensor(choices))
            rewards = [a + self.entropy_weight * float(h) for a, h in zip(acc, entropy)]
            out = reinforce_update(self.controller, self.c_optimizer, choices, rewards, self.baseline,
                                   decay=self.baseline_decay)
            self.baseline = out["baseline"]
            accs += acc
            record = {"epoch": epoch, "step": step, "loss": out["loss"], "baseline": out["baseline"],
                      "entropy": out["entropy"], "mean_accuracy": sum(acc) / len(acc)}
            self.history.append(record)
            stats.append(record)
        return {"mean_reward": sum(accs) / len(accs), "baseline": float(self.baseline),
                "controller_loss": sum(s["loss"] for s in stats) / len(stats),
                "entropy": sum(s["entropy"] for s in stats) / len(stats)}

    # -- checkpoints --------------------------------------------------------------------------------
    def state_dict(self, epoch: int, loaders: tuple[Any, Any]) -> dict[str, Any]:
        import torch

        return {"epoch": epoch, "spec_hash": self.spec_hash, "model": self.model.state_dict(),
                "w_optimizer": self.w_optimizer.state_dict(), "controller": self.controller.state_dict(),
                "c_optimizer": self.c_optimizer.state_dict(), "baseline": self.baseline,
                "history": self.history, "generator": self.generator.get_state(),
                "train_order": loaders[0].generator.get_state(), "val_order": loaders[1].generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def load_state_dict(self, state: dict[str, Any], loaders: tuple[Any, Any]) -> int:
        import torch

        self.model.load_state_dict(state["model"])
        self.w_optimizer.load_state_dict(state["w_optimizer"])
        self.controller.load_state_dict(state["controller"])
        self.c_optimizer.load_state_dict(state["c_optimizer"])
        self.baseline, self.history = state["baseline"], list(state["history"])
        self.generator.set_state(state["generator"])
        loaders[0].generator.set_state(state["train_order"])
        loaders[1].generator.set_state(state["val_order"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return int(state["epoch"])

    def _resume(self, files: Any, loaders: tuple[Any, Any], reporter: Any) -> int:
        """The first epoch to train: 0, or the one after the checkpoint's (which is loaded)."""
        if not files.exists(CHECKPOINT_FILE):
            return 0
        state = files.load_checkpoint(kind="search", name=CHECKPOINT_FILE)
        if state.get("spec_hash") != self.spec_hash:
            raise nasreg.RunDirError(f"{files.file(CHECKPOINT_FILE)}: written under another spec (spec.toml "
                                     "was edited after the run); resume refuses (restore the spec, or start a new run)")
        epoch = self.load_state_dict(state, loaders)
        reporter.message(f"resuming {files} after epoch {epoch - 1}")
        return epoch

    # -- the search ---------------------------------------------------------------------------------
    def search(self, run: Any, bundle: Any, reporter: Any) -> dict[str, Any]:
        import torch
        from torch.utils.data import DataLoader

        ChildSearch.check_spec(self, run.spec)  # workers > 1 beside an [executor]: one line
        self.space, self.spec_hash = run.space, run.spec.digest()
        self.batch_stats = run.spec.search.eval_batch_norm == "batch"
        self.build(run, bundle)
        files = nasreg.RunDir(run.run_dir)
        train, val = nasreg.split_train_val(bundle, run.spec.data.train_portion, run.seed, run.spec.data.limit)
        bs = run.spec.data.batch_size
        loaders = (DataLoader(train, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(run.seed + 1),
                              drop_last=len(train) > bs and len(train) % bs == 1),
                   DataLoader(val, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(run.seed + 2)))
        start = self._resume(files, loaders, reporter)
        epochs_log = [r for r in files.read_jsonl(EPOCHS_FILE) if r.get("epoch", -1) < start]
        files.write_jsonl(EPOCHS_FILE, epochs_log)
        t_start = time.perf_counter()
        # Progress: "epochs" are ENAS epochs, "steps" the shared-weight steps, "val acc" the mean reward.
        reporter.stage_start(0, self.epochs, len(loaders[0]), self.model.num_weights())
        for epoch in range(start, self.epochs):
            t0 = time.perf_counter()
            shared = self.train_shared(epoch, loaders[0], run.device, reporter)
            ctrl = self.train_controller(epoch, loaders[1], run.device)
            record = {"epoch": epoch, "lr": self.lr_at(epoch), **shared, **ctrl, "seconds": time.perf_counter() - t0}
            files.save_checkpoint(self.state_dict(epoch + 1, loaders), kind="search", name=CHECKPOINT_FILE)
            files.append_jsonl(EPOCHS_FILE, record)
            epochs_log.append(record)
            reporter.epoch_end({"train_acc": shared["train_acc"], "val_acc": ctrl["mean_reward"],
                                "train_loss": shared["train_loss"]})
        reporter.stage_end(0)
        samples = self.final_sampling(files, loaders[1], run.device)
        best, finalists = self.train_finalists(run, bundle, files, samples, reporter)
        self.write_controller(files)
        genotype = self.space.genotype_from_choices(best["choices"])
        genotype.provenance = {
            "spec_hash": self.spec_hash, "nasreg_version": nasreg.__version__, "seed": run.seed,
            "strategy": self.strategy_name, "reward": best["reward"], "shared_reward": best["shared_reward"],
            "finalist": best["index"], "sample": best["sample"], "choices": best["choices"],
        }
        last = epochs_log[-1] if epochs_log else {}
        return {
            "genotype": genotype, "strategy": self.strategy_name, "epochs": self.epochs,
            "final_val_acc": best["reward"], "best_finalist": best["index"],
            "finalists": [{"index": f["index"], "sample": f["sample"], "shared_reward": f["shared_reward"],
                           "val_acc": f["reward"]} for f in finalists],
            "last_mean_reward": last.get("mean_reward"), "last_train_acc": last.get("train_acc"),
            "search_space_log10_size": math.log10(self.space.search_space_size())
            if callable(getattr(self.space, "search_space_size", None)) else None,
            "search_seconds": time.perf_counter() - t_start,
            "report": [f"enas: {self.epochs} epochs of shared weights, {len(samples)} cells sampled, "
                       f"{len(finalists)} finalists trained from scratch; best validation accuracy "
                       f"{best['reward']:.4f} (finalist {best['index']}, shared-weight reward "
                       f"{best['shared_reward']:.4f})"],
        }

    def final_sampling(self, files: Any, val_loader: Any, device: Any) -> list[dict[str, Any]]:
        """ENAS's derivation: ``final_samples`` cells scored on one validation batch, best first
        (ties: the earlier sample); written to ``samples.json``."""
        batch = next(iter(val_loader))
        samples = []
        for s, choices in enumerate(self.sample(self.final_samples)):
            reward = self.reward(choices, batch, device)
            genotype = self.space.genotype_from_choices(choices)
            samples.append({"sample": s, "choices": choices, "reward": reward, "genotype": genotype.to_dict()})
        ranked = sorted(samples, key=lambda r: (-r["reward"], r["sample"]))
        files.write_json(SAMPLES_FILE, {"batch_size": int(batch[1].numel()), "samples": ranked})
        return ranked

    def train_finalists(self, run: Any, bundle: Any, files: Any, ranked: list[dict[str, Any]],
                        reporter: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The ``finalists`` best distinct cells trained from scratch through the children's executor;
        the best by validation accuracy (ties: the better shared-weight reward, then rank)."""
        from dataclasses import replace

        from .children import ChildTask, ChildTrainer, child_seed

        chosen, seen = [], set()
        for r in ranked:
            key = repr(sorted((ct, repr(c)) for ct, c in r["genotype"]["cells"].items()))
            if key not in seen:
                seen.add(key)
                chosen.append(r)
            if len(chosen) == self.finalists:
                break
        cfg = replace(ChildSearch.child_config(self, run),
                      network=(("cells", self.child_cells or self.space.cells),
                               ("channels", self.child_channels or self.space.channels)))
        journal = _Journal(files, FINALISTS_FILE, self.spec_hash)
        done: list[dict[str, Any] | None] = [None] * len(chosen)
        with ChildTrainer(run, bundle, cfg, self.workers, ChildSearch.executor(self, run.spec)) as trainer:
            tasks, where = [], []
            for k, r in enumerate(chosen):
                seed = child_seed(run.seed, k)
                old = journal.get(k, r["choices"], seed)
                if old is not None:
                    done[k] = old
                    continue
                tasks.append(ChildTask(k, r["genotype"], seed, trainer.device_for(k)))
                where.append(k)
            for k, task, out in zip(where, tasks, trainer.train(tasks)):
                record = {"index": k, "sample": chosen[k]["sample"], "choices": chosen[k]["choices"],
                          "seed": task.seed, "shared_reward": chosen[k]["reward"], **out,
                          "genotype": task.genotype, "spec_hash": self.spec_hash}
                journal.append(record)
                done[k] = record
                reporter.message(f"enas finalist {k} (sample {record['sample']}): validation accuracy "
                                 f"{record['reward']:.4f} after {self.child_epochs} epochs from scratch")
        finalists = [d for d in done if d is not None]
        best = max(finalists, key=lambda f: (f["reward"], f["shared_reward"], -f["index"]))
        return best, finalists

    def write_controller(self, files: Any) -> None:
        import io

        import torch

        choices, probs = self.controller.greedy()
        files.write_json(CONTROLLER_FILE, {
            "strategy": self.strategy_name, "hidden_size": self.hidden_size, "controller_lr": self.controller_lr,
            "baseline_decay": self.baseline_decay, "entropy_weight": self.entropy_weight,
            "temperature": self.temperature, "tanh_constant": self.tanh_constant,
            "op_tanh_reduce": self.op_tanh_reduce,
            "decisions": [{"name": n, "choices": k} for n, k in self.decisions],
            "updates": self.history,
            "most_likely": {"choices": choices, "probabilities": probs,
                            "genotype": self.space.genotype_from_choices(choices).to_dict()},
        })
        buf = io.BytesIO()
        torch.save(self.controller.state_dict(), buf)
        files.write_bytes(CONTROLLER_WEIGHTS, buf.getvalue())


def _cycle(loader: Any) -> Iterator[Any]:
    """The loader's batches, round after round (each round a fresh shuffle)."""
    while True:
        yield from loader
