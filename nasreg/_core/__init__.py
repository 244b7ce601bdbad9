"""nasreg's internal modules: not a public API (import what you need from ``nasreg``).

Anything here may change in any release; ``nasreg.__all__`` is the stable surface."""
