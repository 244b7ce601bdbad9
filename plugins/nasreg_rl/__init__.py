"""nasreg's built-in sampling-strategy plugin: NAS with reinforcement learning, and random search.

Registers, through the public plugin API only, two :class:`nasreg.SamplingStrategy` strategies
(``[strategy] name``; no ``[selector]``: each returns the best child's genotype itself):

* ``reinforce``: an LSTM controller emits a space's decisions step by step and is trained with
  REINFORCE, a moving-average baseline and m children per update, each child trained briefly and
  rewarded with its validation accuracy (Zoph and Le, 2017), see :mod:`nasreg_rl.strategy` and
  :mod:`nasreg_rl.controller`;
* ``random``: uniform sampling of the same decisions with the same child budget, the baseline.

Children are independent trials, trained in-process or in parallel processes
(``workers``), see :mod:`nasreg_rl.children`. The spaces they search are the ``nasnet`` plugin's
``nasnet-cell`` and ``nas-layers``, or any space with ``decisions()`` and
``genotype_from_choices()``.
"""

from __future__ import annotations

from nasreg import hookimpl


@hookimpl
def register_strategies(register):
    from .strategy import RandomStrategy, ReinforceStrategy

    register("reinforce", ReinforceStrategy,
             description="NAS: LSTM controller trained with REINFORCE on the validation accuracy of sampled children")
    register("random", RandomStrategy,
             description="Random search: uniformly sampled children, reinforce's child budget (the baseline)")
