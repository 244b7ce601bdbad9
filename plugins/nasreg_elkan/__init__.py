"""Built-in plugin ``elkan``: the Elkan k-means clusterer that DG-DARTS groups operations with.

Registers the clusterer ``elkan``: scikit-learn's ``KMeans(algorithm="elkan")`` with the paper's
settings as defaults (3 clusters, ``max_iter`` 300, ``tol`` 1e-4). scikit-learn is imported only
when a clusterer is built, so loading the plugin costs nothing.

The clusterer contract (``nasreg.hookspecs.register_clusterers``): the factory takes the spec
table's keys and returns an object with ``fit_predict(X) -> labels``. ``n_clusters`` larger than
the number of samples is not this factory's concern: a selector that clusters few rows (the
``dg-darts`` selector) clamps ``n_clusters`` to the number of distinct rows before fitting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from nasreg import Range, hookimpl

__all__ = ["elkan"]


def elkan(n_clusters: Annotated[int, Range(ge=1)] = 3,
          max_iter: Annotated[int, Range(ge=1)] = 300,
          tol: Annotated[float, Range(gt=0)] = 1e-4,
          n_init: Annotated[int, Range(ge=1)] = 10,
          init: Literal["k-means++", "random"] = "k-means++",
          random_state: Annotated[int, Range(ge=0, le=2**32 - 1)] | None = None) -> Any:
    """Elkan k-means (scikit-learn KMeans, algorithm "elkan").

    ``n_init`` defaults to 10, scikit-learn's default when the paper was written (newer versions
    default to 1 run for k-means++); ``tol`` is relative to the data's variance, as in
    scikit-learn. ``random_state`` left unset is filled with the run's seed by the selector.
    """
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=n_clusters, algorithm="elkan", max_iter=max_iter, tol=tol,
                  n_init=n_init, init=init, random_state=random_state)


@hookimpl
def register_clusterers(register):
    register("elkan", elkan)
