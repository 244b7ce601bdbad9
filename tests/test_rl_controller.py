"""The ``reinforce`` controller and its REINFORCE update, on toy problems (no child is trained)."""

from __future__ import annotations

import math

import pytest
import torch

from nasreg_rl.controller import Controller, reinforce_update


pytestmark = pytest.mark.usefixtures("one_thread")


def make(sizes, seed=0, hidden=16, lr=0.05):
    torch.manual_seed(seed)
    controller = Controller(sizes, hidden_size=hidden)
    return controller, torch.optim.Adam(controller.parameters(), lr=lr)


def toy_reward(choices: list[int]) -> float:
    """The best sequence starts with 2 (of 3) and has 1 (of 4) second; the third is irrelevant."""
    return 1.0 * (choices[0] == 2) + 0.5 * (choices[1] == 1)


def test_sampling_shapes_ranges_and_seeded_determinism():
    controller, _ = make([3, 4, 2, 5])
    a = controller.sample(64, torch.Generator().manual_seed(1))
    b = controller.sample(64, torch.Generator().manual_seed(1))
    assert a.shape == (64, 4) and torch.equal(a, b)
    for t, n in enumerate([3, 4, 2, 5]):
        assert set(a[:, t].tolist()) == set(range(n))  # an untrained policy is nearly uniform
    log_prob, entropy = controller.log_prob(a[:3])
    assert log_prob.shape == entropy.shape == (3,)


def test_log_prob_is_the_sum_of_the_step_probabilities_along_the_sequence():
    controller, _ = make([3, 4, 2])
    seq = [2, 0, 1]
    probs = controller.step_probabilities(seq)
    assert [len(p) for p in probs] == [3, 4, 2]
    expected = sum(math.log(p[a]) for p, a in zip(probs, seq))
    log_prob, entropy = controller.log_prob(torch.tensor([seq]))
    assert log_prob.item() == pytest.approx(expected, abs=1e-5)
    h = sum(-sum(q * math.log(q) for q in p) for p in probs)
    assert entropy.item() == pytest.approx(h, abs=1e-5)


def test_the_previous_choice_conditions_the_next_step():
    controller, _ = make([3, 3])
    second = {tuple(round(x, 6) for x in controller.step_probabilities([a, 0])[1]) for a in range(3)}
    assert len(second) == 3  # the embedding of step 0's choice is step 1's input


def test_reinforce_raises_the_probability_of_the_best_choice():
    controller, optimizer = make([3, 4, 2])
    generator = torch.Generator().manual_seed(0)
    first = controller.step_probabilities([2, 1, 0])
    baseline, history = None, []
    for _update in range(40):
        actions = controller.sample(8, generator)
        rewards = [toy_reward(a) for a in actions.tolist()]
        stats = reinforce_update(controller, optimizer, actions, rewards, baseline, decay=0.8)
        baseline = stats["baseline"]
        history.append(controller.step_probabilities([2, 1, 0]))
    last = controller.step_probabilities([2, 1, 0])
    assert first[0][2] == pytest.approx(1 / 3, abs=0.05) and first[1][1] == pytest.approx(1 / 4, abs=0.05)
    assert last[0][2] > 0.9  # P(first choice = 2) rose from 1/3
    assert last[1][1] > 0.7  # P(second choice = 1 | first = 2) rose from 1/4
    assert history[10][0][2] > first[0][2] and history[25][0][2] > history[10][0][2]  # along the way
    assert controller.greedy()[0][:2] == [2, 1]
    assert baseline > 1.0  # the moving average of rewards follows the improving policy


def test_the_baseline_is_a_moving_average_starting_at_the_first_mean():
    controller, optimizer = make([2])
    actions = torch.tensor([[0], [1], [1], [0]])
    stats = reinforce_update(controller, optimizer, actions, [1.0, 0.0, 0.0, 1.0], None, decay=0.9)
    assert stats["baseline_used"] == 0.5 and stats["baseline"] == pytest.approx(0.5)
    assert stats["advantages"] == [0.5, -0.5, -0.5, 0.5]
    stats = reinforce_update(controller, optimizer, actions, [1.0, 1.0, 1.0, 1.0], 0.5, decay=0.9)
    assert stats["baseline"] == pytest.approx(0.9 * 0.5 + 0.1 * 1.0)


def test_equal_rewards_at_the_baseline_leave_the_policy_unchanged_but_entropy_spreads_it():
    controller, optimizer = make([4], lr=0.1)
    before = [p.detach().clone() for p in controller.parameters()]
    actions = torch.tensor([[0], [0], [1], [3]])
    reinforce_update(controller, optimizer, actions, [0.7] * 4, None, decay=0.9)
    assert all(torch.equal(a, b) for a, b in zip(before, controller.parameters()))
    # skew the policy, then an entropy bonus alone (no advantage) flattens it again
    with torch.no_grad():
        controller.heads[0].bias.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))
    h0 = controller.log_prob(actions)[1][0].item()
    for _ in range(20):
        reinforce_update(controller, optimizer, actions, [0.7] * 4, 0.7, decay=0.9, entropy_weight=1.0)
    assert controller.log_prob(actions)[1][0].item() > h0 + 0.3


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="at least one decision"):
        Controller([])
