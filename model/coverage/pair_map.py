"""`PairMap`: a small map learnt on the centred encoder vectors from graded pairs, for the graded
output's learnt route.

Each text's language mean is taken away first (`model.coverage.pair_centring`), then a residual
linear map, ``normalise(x + x @ W + b)``, is learnt with CoSENT (the cosines of two pairs should
come in the order of their grades) on the graded training pairs. Centring first matters: on the raw
e5 vectors, whose cosines all sit at 0.7-1.0, the same map swung from fold to fold (semeval_ml
|Pearson| 0.62-0.72 out of fold by passes, English SemEval down to 0.70), on the centred ones it
held (0.75-0.77, English 0.85-0.86; `benchmarks.pairs_learnt`).

How many passes: chosen by grouped cross-validation on the training pairs (`PAIR_MAP_EPOCHS`, the
pair's articles never on both sides of a fold), not fixed, since what suits 1,000 pairs wrecks 130
(20 passes of the topic adapter took English SemEval from 0.86 to 0.48). The out-of-fold cosines at
the chosen passes are kept (``oof_cosines_``): the scorer chooses its routes on them, so a route
choice never sees a map that learnt the pairs it is checked on.

The map is trained in torch (imported only to fit); applying it is plain numpy.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator
from sklearn.model_selection import GroupKFold

# Passes over the training pairs tried by cross-validation (nested: one run per fold reads all).
PAIR_MAP_EPOCHS: tuple[float, ...] = (3.0, 10.0, 30.0, 100.0)
# Graded pairs a map needs before it is learnt at all (fewer: the scorer keeps its other routes).
MIN_PAIR_MAP_PAIRS = 100


def linked_groups(a: Sequence[Hashable], b: Sequence[Hashable]) -> npt.NDArray[np.intp]:
    """A group per pair such that pairs sharing an article (``a[k]`` or ``b[k]``, e.g. its text)
    share a group: folds by these groups never put one article on both sides."""
    parent = list(range(len(a)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    first: dict[Hashable, int] = {}
    for k, keys in enumerate(zip(a, b, strict=True)):
        for key in keys:
            if key in first:
                parent[find(k)] = find(first[key])
            else:
                first[key] = k
    return np.array([find(k) for k in range(len(a))], dtype=np.intp)


def _normalise(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class PairMap(BaseEstimator):
    """A residual linear map of centred unit vectors, learnt with CoSENT from graded pairs.

    Parameters
    ----------
    epochs : tuple of float, default=PAIR_MAP_EPOCHS
        Passes over the training pairs to choose from by grouped cross-validation.
    learning_rate : float, default=1e-3
        AdamW's rate (3e-3 swung the map from fold to fold on semeval_ml).
    weight_decay : float, default=0.01
    batch_size : int, default=128
        Pairs per step: CoSENT ranks the pairs of one batch against each other.
    folds : int, default=3
        Folds of the cross-validation that chooses the passes.
    seed : int, default=0

    Attributes
    ----------
    weight_ : ndarray of shape (dim, dim), float32
    bias_ : ndarray of shape (dim,), float32
    epochs_ : float
        The passes chosen.
    cv_ : dict of str to float
        |Pearson| with the grade of the out-of-fold cosines, per passes tried (``"0"``: the
        centred cosine itself).
    oof_cosines_ : ndarray of shape (n_pairs,)
        Each training pair's cosine after the map learnt without its fold, at the chosen passes.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(60, 8)), rng.normal(size=(60, 8))
    >>> m = PairMap(epochs=(1.0,), folds=2).fit(a, b, rng.uniform(1, 4, 60))
    >>> m.cosines(a, b).shape
    (60,)
    """

    def __init__(
        self,
        *,
        epochs: tuple[float, ...] = PAIR_MAP_EPOCHS,
        learning_rate: float = 1e-3,
        weight_decay: float = 0.01,
        batch_size: int = 128,
        folds: int = 3,
        seed: int = 0,
    ) -> None:
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.folds = folds
        self.seed = seed

    def fit(
        self, a: npt.ArrayLike, b: npt.ArrayLike, grades: npt.ArrayLike, groups: npt.ArrayLike | None = None
    ) -> PairMap:
        """Learn the map from the two sides' centred unit vectors (``a[k]``, ``b[k]``) and each
        pair's SemEval grade (1 = same story ... 4 = unrelated); ``groups``: `linked_groups`."""
        a, b = _normalise(a), _normalise(b)
        grades = np.asarray(grades, dtype=np.float64).ravel()
        if not len(a) == len(b) == len(grades):
            raise ValueError(f"{len(a)} and {len(b)} vectors for {len(grades)} grades")
        groups = np.arange(len(grades)) if groups is None else np.asarray(groups).ravel()
        epochs = tuple(sorted(float(e) for e in self.epochs))
        oof = {e: np.zeros(len(grades)) for e in epochs}
        folds = min(self.folds, len(np.unique(groups)))
        for train, test in GroupKFold(folds).split(a, grades, groups):
            for e, (weight, bias) in self._learn(a[train], b[train], grades[train], epochs).items():
                oof[e][test] = self._cosines(a[test], b[test], weight, bias)
        self.cv_ = {"0": _abs_pearson((a * b).sum(axis=1), grades)}
        self.cv_.update({f"{e:g}": _abs_pearson(oof[e], grades) for e in epochs})
        # The most passes only where they lead: ties go to the fewer.
        self.epochs_ = max(epochs, key=lambda e: (round(self.cv_[f"{e:g}"], 3), -e))
        self.oof_cosines_ = oof[self.epochs_]
        weight, bias = self._learn(a, b, grades, (self.epochs_,))[self.epochs_]
        self.weight_, self.bias_ = weight.astype(np.float32), bias.astype(np.float32)
        self.n_pairs_ = len(grades)
        return self

    def _learn(
        self,
        a: npt.NDArray[np.float64],
        b: npt.NDArray[np.float64],
        grades: npt.NDArray[np.float64],
        epochs: tuple[float, ...],
    ) -> dict[float, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
        """The map after each number of ``epochs`` (one run, read at each)."""
        import torch

        torch.manual_seed(self.seed)
        left = torch.from_numpy(a.astype(np.float32))
        right = torch.from_numpy(b.astype(np.float32))
        # CoSENT asks only for order: a lower grade ranks above.
        target = torch.from_numpy((-grades).astype(np.float32))
        dim = a.shape[1]
        weight = torch.zeros((dim, dim), requires_grad=True)
        bias = torch.zeros(dim, requires_grad=True)
        optimiser = torch.optim.AdamW([weight, bias], lr=self.learning_rate, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        n, batch = len(grades), self.batch_size
        steps_per_epoch = max(1.0, n / batch)
        read_at = {max(1, int(np.ceil(e * steps_per_epoch))): e for e in epochs}
        out = {}
        order, position = torch.randperm(n, generator=generator), 0

        def mapped(x: Any) -> Any:
            return torch.nn.functional.normalize(x + x @ weight + bias, dim=-1)

        for step in range(1, max(read_at) + 1):
            if position >= n:
                order, position = torch.randperm(n, generator=generator), 0
            chosen = order[position : position + batch]
            position += batch
            cosines = (mapped(left[chosen]) * mapped(right[chosen])).sum(-1)
            loss = cosent(cosines, target[chosen])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if step in read_at:
                out[read_at[step]] = (weight.detach().numpy().copy(), bias.detach().numpy().copy())
        return out

    @staticmethod
    def _cosines(
        a: npt.NDArray[np.floating], b: npt.NDArray[np.floating], weight: Any, bias: Any
    ) -> npt.NDArray[np.float64]:
        def mapped(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
            x = np.asarray(x, dtype=np.float64)
            return _normalise(x + x @ weight + bias)

        return np.clip(np.einsum("ij,ij->i", mapped(a), mapped(b)), -1.0, 1.0)

    def transform(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The map applied to centred unit vectors."""
        x = np.asarray(vectors, dtype=np.float64)
        return _normalise(x + x @ self.weight_ + self.bias_)

    def cosines(self, a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The cosine of each pair ``(a[k], b[k])`` of centred unit vectors after the map."""
        return self._cosines(_normalise(a), _normalise(b), self.weight_, self.bias_)


def cosent(cosines: Any, targets: Any, scale: float = 20.0) -> Any:
    """CoSENT: log(1 + sum over pairs i, j with target_i > target_j of exp(scale (cos_j - cos_i)))
    (`sentence_transformers` `CoSENTLoss`, on given cosines; torch tensors)."""
    import torch

    scaled = cosines * scale
    diff = scaled[None, :] - scaled[:, None]  # diff[i, j] = s_j - s_i, a loss where target_i > target_j
    mask = targets[:, None] > targets[None, :]
    values = torch.cat([torch.zeros(1, device=cosines.device), diff[mask]])
    return torch.logsumexp(values, dim=0)


def _abs_pearson(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]) -> float:
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return round(abs(float(np.corrcoef(x, y)[0, 1])), 4)
