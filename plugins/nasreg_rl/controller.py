"""The controller of ``reinforce``: an LSTM that emits a space's decisions, and its REINFORCE update.

:class:`Controller` (Zoph and Le, 2017) runs one LSTM cell step per decision. The first step's
input is a learned start vector; every later step's input is the embedding of the choice just
made (one embedding table per decision, of that decision's size). A linear softmax head per
decision, as wide as the decision's choice count, reads the LSTM state and gives the choice's
distribution. Decisions may have different sizes (a NASNet block chooses among more inputs the
later it comes).

:func:`reinforce_update` is the policy-gradient step of seed 003, with a moving-average baseline::

    loss = -1/m sum_k (R_k - b) log P(a^k_{1:T}) - entropy_weight * 1/m sum_k H(P(. | a^k))
    b   <- decay * b + (1 - decay) * mean_k R_k        (b starts at the first batch's mean reward)

It needs only the sampled choices and their rewards, so it is tested without training any child.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Controller", "reinforce_update"]


class Controller(nn.Module):
    """An LSTM policy over a sequence of categorical decisions of the given sizes."""

    def __init__(self, sizes: Sequence[int], hidden_size: int = 64, init_range: float = 0.1,
                 temperature: float = 1.0, tanh_constant: float | Sequence[float | None] | None = None):
        """``temperature`` and ``tanh_constant`` shape the logits as ENAS does (Pham et al., 2018):
        ``logits / temperature``, then ``c * tanh(.)`` with ``c`` the tanh constant (one value, or
        one per decision; None: no tanh), so no choice's probability can run away early."""
        super().__init__()
        self.sizes = [int(n) for n in sizes]
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise ValueError(f"expected at least one decision, each with >= 1 choice, got {self.sizes}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        if tanh_constant is None or isinstance(tanh_constant, (int, float)):
            tanh_constant = [tanh_constant] * len(self.sizes)
        self.tanh_constants = [None if c is None else float(c) for c in tanh_constant]
        if len(self.tanh_constants) != len(self.sizes):
            raise ValueError(f"expected one tanh constant per decision ({len(self.sizes)}), "
                             f"got {len(self.tanh_constants)}")
        self.hidden_size = hidden_size
        self.start = nn.Parameter(torch.zeros(1, hidden_size))
        self.lstm = nn.LSTMCell(hidden_size, hidden_size)
        self.embeddings = nn.ModuleList(nn.Embedding(n, hidden_size) for n in self.sizes)
        self.heads = nn.ModuleList(nn.Linear(hidden_size, n) for n in self.sizes)
        for p in self.parameters():  # NAS/ENAS: uniform in [-0.1, 0.1]
            nn.init.uniform_(p, -init_range, init_range)

    def logits(self, t: int, h: torch.Tensor) -> torch.Tensor:
        """Step ``t``'s logits from the LSTM state ``h``: the head, the temperature, the tanh."""
        z = self.heads[t](h)
        if self.temperature != 1.0:
            z = z / self.temperature
        c = self.tanh_constants[t]
        return z if c is None else c * torch.tanh(z)

    def _unroll(self, batch: int, actions: torch.Tensor | None, generator: torch.Generator | None,
                greedy: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.start.expand(batch, -1)
        h = x.new_zeros(batch, self.hidden_size)
        c = x.new_zeros(batch, self.hidden_size)
        chosen, log_probs, entropies = [], [], []
        for t in range(len(self.sizes)):
            h, c = self.lstm(x, (h, c))
            logp = F.log_softmax(self.logits(t, h), dim=-1)
            if actions is not None:
                a = actions[:, t]
            elif greedy:
                a = logp.argmax(dim=-1)
            else:
                a = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
            chosen.append(a)
            log_probs.append(logp.gather(1, a.unsqueeze(1)).squeeze(1))
            entropies.append(-(logp.exp() * logp).sum(dim=-1))
            x = self.embeddings[t](a)
        return torch.stack(chosen, 1), torch.stack(log_probs, 1), torch.stack(entropies, 1)

    @torch.no_grad()
    def sample(self, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``m`` choice sequences, shape (m, T), sampled from the policy."""
        actions, _, _ = self._unroll(m, None, generator)
        return actions

    @torch.no_grad()
    def greedy(self) -> tuple[list[int], list[float]]:
        """The most likely choice at every step (given the previous ones) and its probability."""
        actions, log_probs, _ = self._unroll(1, None, None, greedy=True)
        return actions[0].tolist(), log_probs[0].exp().tolist()

    def log_prob(self, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log P(sequence), summed entropy of the step distributions), each of shape (m,), for
        the choice sequences ``actions`` (m, T): the controller's graph, for the update."""
        actions = torch.as_tensor(actions, dtype=torch.long)
        _, log_probs, entropies = self._unroll(actions.shape[0], actions, None)
        return log_probs.sum(1), entropies.sum(1)

    @torch.no_grad()
    def step_probabilities(self, actions: Sequence[int]) -> list[list[float]]:
        """The distribution of every step along one choice sequence (for reports and tests)."""
        a = torch.as_tensor([list(actions)], dtype=torch.long)
        x = self.start
        h = x.new_zeros(1, self.hidden_size)
        c = x.new_zeros(1, self.hidden_size)
        out = []
        for t in range(len(self.sizes)):
            h, c = self.lstm(x, (h, c))
            out.append(F.softmax(self.logits(t, h), dim=-1)[0].tolist())
            x = self.embeddings[t](a[:, t])
        return out


def reinforce_update(controller: Controller, optimizer: torch.optim.Optimizer, actions: Any,
                     rewards: Sequence[float], baseline: float | None, *, decay: float,
                     entropy_weight: float = 0.0) -> dict[str, Any]:
    """One REINFORCE step on ``m`` sampled sequences ``actions`` (m, T) and their ``rewards``.

    ``baseline`` is the moving average so far (None before the first update: the batch's mean
    reward is used). Returns the statistics of the step, ``baseline`` being the updated average.
    """
    r = torch.as_tensor(list(rewards), dtype=torch.float32)
    b = float(r.mean()) if baseline is None else float(baseline)
    advantage = r - b
    log_prob, entropy = controller.log_prob(torch.as_tensor(actions, dtype=torch.long))
    loss = -(advantage * log_prob).mean() - entropy_weight * entropy.mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {
        "loss": float(loss.detach()),
        "baseline_used": b,
        "baseline": decay * b + (1.0 - decay) * float(r.mean()),
        "advantages": advantage.tolist(),
        "log_probs": log_prob.detach().tolist(),
        "entropy": float(entropy.detach().mean()),
    }
