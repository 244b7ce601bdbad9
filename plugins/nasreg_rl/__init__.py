"""nasreg's built-in sampling-strategy plugin: NAS with reinforcement learning, and random search.

Registers, through the public plugin API only, four :class:`nasreg.SamplingStrategy` strategies
(``[strategy] name``; no ``[selector]``: each returns the best child's genotype itself):

* ``reinforce``: an LSTM controller emits a space's decisions step by step and is trained with
  REINFORCE, a moving-average baseline and m children per update, each child trained briefly and
  rewarded with its validation accuracy (Zoph and Le, 2017), see :mod:`nasreg_rl.strategy` and
  :mod:`nasreg_rl.controller`;
* ``random``: uniform sampling of the same decisions with the same child budget, the baseline.
* ``evolution``: regularized (aging) evolution (Real et al., 2019): a random population, each
  child its tournament-chosen parent with one decision mutated, the oldest member dying, see
  :mod:`nasreg_rl.evolution`.
* ``enas``: ENAS (Pham et al., 2018): the controller's children share the weights of one
  supernet (``darts-cell``), trained alternately with the controller; the best sampled cells are
  trained from scratch as children and the best of them wins, see :mod:`nasreg_rl.enas`.

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

    from .evolution import EvolutionStrategy

    register("evolution", EvolutionStrategy,
             description="Regularized (aging) evolution: tournament-chosen parents, one mutation per child, "
                         "the oldest member dies (Real et al., 2019)")

    from .enas import EnasStrategy

    register("enas", EnasStrategy,
             description="ENAS: a controller samples cells sharing one supernet's weights (darts-cell); "
                         "the best finalists trained from scratch")
