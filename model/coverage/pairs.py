"""Where bundles written before the pair modules were split find their pickled classes.

A bundle's ``pairs.joblib`` names its classes by module path: ``model.coverage.pairs.PairScorer``
and ``model.coverage.pairs.HashedIdf`` (the scorer's IDF). These aliases keep those bundles
loading; new code imports from `model.coverage.pair_evidence`, `model.coverage.pair_scorer` and
`model.coverage.pair_files`.
"""

from model.coverage.pair_evidence import HashedIdf
from model.coverage.pair_scorer import PairScorer

__all__ = ["HashedIdf", "PairScorer"]
