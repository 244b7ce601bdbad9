"""nasreg's built-in GDAS plugin (Dong and Yang, "Searching for A Robust Neural Architecture in
Four GPU Hours", CVPR 2019).

Registers, through the public plugin API only, the supernet strategy ``gdas``: per forward pass
and edge one op is sampled with the Gumbel-softmax (hard one-hot forward, soft straight-through
backward) and only that op is computed; see :mod:`nasreg_gdas.strategy`. The genotype is derived
by the spec's ``[selector]`` (``argmax``: the DARTS derivation over softmax(alpha)).

Registration imports no torch: the strategy module imports it in its methods.
"""

from __future__ import annotations

from nasreg import hookimpl


@hookimpl
def register_strategies(register):
    from .strategy import GdasStrategy

    register("gdas", GdasStrategy,
             description="GDAS: one Gumbel-softmax sampled op per edge, straight-through gradients")
