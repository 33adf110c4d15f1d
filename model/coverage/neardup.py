"""Near-duplicate text: character shingles, MinHash signatures and LSH banding.

Syndicated wire copy and re-posts differ from the original by a headline tweak, a dateline or a
trailing "(Reporting by ...)". Word-level similarity of embeddings cannot tell "the same text" from
"the same story told again"; character shingles can. Two texts whose shingle sets have a Jaccard
similarity above ~0.8 are the same write-up.

MinHash is implemented with numpy (universal hashing of 64-bit shingle hashes) rather than
datasketch objects: one vectorised pass signs thousands of documents, signatures are plain
``uint32`` arrays that pickle and save compactly, and LSH banding is a dict of band keys.
"""

from __future__ import annotations

import functools
import hashlib
import re
import sys
import unicodedata
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

# The one rule for "duplicate" (the same write-up), shared by `PairScorer.verdict` (one pair at a
# time) and `dedup_corpus` (a whole corpus, blocked by LSH): shingle Jaccard at or above
# NEAR_DUPLICATE_JACCARD, on texts of MIN_DUPLICATE_TEXT_CHARS or more (a bare headline like
# "Markets" says nothing about two articles being copies), or on excerpts alone when both have
# MIN_DUPLICATE_EXCERPT_CHARS or more (wire copy re-posted under a new headline keeps its body;
# the shortest identical Reuters bodies, 57 chars, are dividend notices re-sent that way).
NEAR_DUPLICATE_JACCARD = 0.8
MIN_DUPLICATE_TEXT_CHARS = 30
MIN_DUPLICATE_EXCERPT_CHARS = 50

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
_MAX_HASH = np.uint64((1 << 32) - 1)


def normalize_text(text: str) -> str:
    """Lower-case, accent-folded, punctuation-free text with single spaces.

    Re-posts change quotes (’ vs '), dashes and spacing; none of that should make two copies differ.
    """
    # ASCII has nothing to decompose or fold: skip that pass (most text).
    folded = text if text.isascii() else unicodedata.normalize("NFKD", text).translate(_combining_marks())
    return " ".join(_NON_WORD.sub(" ", folded.lower()).split())


@functools.cache
def _combining_marks() -> dict[int, None]:
    """A `str.translate` table deleting every code point with a combining class (what
    ``unicodedata.combining`` flags), made once: one C pass instead of a Python call per character."""
    return {cp: None for cp in range(sys.maxunicode + 1) if unicodedata.combining(chr(cp))}


def text_fingerprint(text: str) -> str:
    """A hash of the normalised text: equal fingerprints mean identical text up to case/punctuation."""
    return hashlib.sha1(normalize_text(text).encode("utf-8")).hexdigest()[:16]


def shingles(text: str, k: int = 5, *, normalized: bool = False) -> set[str]:
    """Character ``k``-grams of the normalised text (the whole text if shorter than ``k``)."""
    norm = text if normalized else normalize_text(text)
    if not norm:
        return set()
    if len(norm) <= k:
        return {norm}
    return {norm[i : i + k] for i in range(len(norm) - k + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity of two sets (0.0 when both are empty)."""
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass(frozen=True, slots=True)
class Shingled:
    """What the duplicate rule reads of one article: the shingles of its text and of its excerpt,
    None where that one is too short to call a copy (see the constants above). Made once per
    article where it meets many others (a backfill's batch); the sets are shared, never changed."""

    text: set[str] | None
    excerpt: set[str] | None


def shingled(text: str, excerpt: str = "", *, cached: bool = True) -> Shingled:
    """``text``'s and ``excerpt``'s shingles for `duplicate_score` (``cached``: through the shared
    cache of recent texts; a caller that keeps its own passes False)."""
    make = _shingles_cached if cached else shingles
    return Shingled(
        make(text) if len(text) >= MIN_DUPLICATE_TEXT_CHARS else None,
        make(excerpt) if len(excerpt) >= MIN_DUPLICATE_EXCERPT_CHARS else None,
    )


def duplicate_score(a: Shingled, b: Shingled) -> float:
    """Shingle Jaccard of two texts, or of their excerpts when both are long enough, whichever is
    higher; 0.0 when a text is too short to call a copy."""
    whole = jaccard(a.text, b.text) if a.text is not None and b.text is not None else 0.0
    if a.excerpt is not None and b.excerpt is not None:
        return max(whole, jaccard(a.excerpt, b.excerpt))
    return whole


def duplicate_scores_from(pairs: Sequence[tuple[Shingled, Shingled]], threshold: float) -> list[float]:
    """`duplicate_score` of each pair where it reaches ``threshold``, exactly; elsewhere a value
    below ``threshold`` (0.0 for a part that cannot reach it), so every ``>= threshold`` test, and
    every value that passes one, is the same.

    The exact Jaccard of two shingle sets is skipped where it provably falls short: ``|A & B| <=
    min(|A|, |B|)`` and ``|A | B| >= max(|A|, |B|)``, so the size ratio bounds it (most candidate
    pairs of a batch differ in length by more than a fifth)."""
    out = []
    for a, b in pairs:
        score = 0.0
        if a.text is not None and b.text is not None and _may_reach(a.text, b.text, threshold):
            score = jaccard(a.text, b.text)
        if a.excerpt is not None and b.excerpt is not None and _may_reach(a.excerpt, b.excerpt, threshold):
            score = max(score, jaccard(a.excerpt, b.excerpt))
        out.append(score)
    return out


def _may_reach(a: set[str], b: set[str], threshold: float) -> bool:
    """Whether ``jaccard(a, b)`` can be ``threshold`` or more, by the sizes alone."""
    small, large = sorted((len(a), len(b)))
    # A hair of slack: a float ratio a rounding step under the threshold is still scored exactly.
    return large > 0 and small / large >= threshold - 1e-9


def near_duplicate_score(text_a: str, text_b: str, excerpt_a: str = "", excerpt_b: str = "") -> float:
    """`duplicate_score` of two articles' texts and excerpts."""
    return duplicate_score(shingled(text_a, excerpt_a), shingled(text_b, excerpt_b))


# A corpus pass verifies each text against several candidates: shingle it once. The sets are
# shared, so callers must not change them.
_shingles_cached = functools.lru_cache(maxsize=1 << 16)(shingles)


def text_jaccard(a: str, b: str, k: int = 5) -> float:
    """Exact character-shingle Jaccard of two texts: cheap enough for one pair at a time."""
    return jaccard(shingles(a, k), shingles(b, k))


_POLY = np.uint64(1_099_511_628_211)  # FNV-64 prime, as the base of a polynomial rolling hash


def shingle_hashes(text: str, k: int = 5) -> npt.NDArray[np.uint64]:
    """Distinct 64-bit hashes of the character ``k``-grams of the normalised text.

    A vectorised polynomial hash over code points: stable across processes (unlike ``hash``)
    and ~50x faster than hashing each shingle string in Python, which matters at 100k articles.
    """
    norm = normalize_text(text)
    if not norm:
        return np.zeros(0, dtype=np.uint64)
    codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    width = max(len(codes) - k + 1, 1)
    hashed = np.zeros(width, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(min(k, len(codes))):
            hashed = hashed * _POLY + codes[j : j + width]
        # splitmix64 finaliser: spreads the polynomial hash over all 64 bits
        hashed ^= hashed >> np.uint64(30)
        hashed *= np.uint64(0xBF58476D1CE4E5B9)
        hashed ^= hashed >> np.uint64(27)
        hashed *= np.uint64(0x94D049BB133111EB)
        hashed ^= hashed >> np.uint64(31)
    return np.unique(hashed)


class MinHasher:
    """MinHash signatures of character-shingle sets.

    Parameters
    ----------
    num_perm : int, default=64
        Signature length; the Jaccard estimate's standard error is about ``sqrt(J(1-J)/num_perm)``.
    k : int, default=5
        Shingle length in characters.
    seed : int, default=1
        Seeds the hash permutations, so signatures are comparable across runs.
    """

    def __init__(self, num_perm: int = 64, k: int = 5, seed: int = 1) -> None:
        self.num_perm = num_perm
        self.k = k
        self.seed = seed
        rng = np.random.default_rng(seed)
        # Universal hashing (a*x + b) mod p on the lower 61 bits, done in uint64 with wrap-around
        # multiplication: not a strict Mersenne modular hash, but well mixed and fast.
        self._a = rng.integers(1, (1 << 61) - 1, size=num_perm, dtype=np.uint64) | np.uint64(1)
        self._b = rng.integers(0, (1 << 61) - 1, size=num_perm, dtype=np.uint64)

    def signature(self, text: str) -> npt.NDArray[np.uint32]:
        """The MinHash signature (``num_perm`` uint32 values) of ``text``'s shingles."""
        hashed = shingle_hashes(text, self.k)
        if hashed.size == 0:
            return np.full(self.num_perm, np.iinfo(np.uint32).max, dtype=np.uint32)
        with np.errstate(over="ignore"):
            mixed = (hashed[:, None] * self._a[None, :] + self._b[None, :]) >> np.uint64(29)
        return (mixed & _MAX_HASH).min(axis=0).astype(np.uint32)

    def signatures(self, texts: Sequence[str]) -> npt.NDArray[np.uint32]:
        """Signatures of many texts as a (n, num_perm) array."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for i, text in enumerate(texts):
            out[i] = self.signature(text)
        return out

    @staticmethod
    def estimate(sig_a: npt.NDArray[np.uint32], sig_b: npt.NDArray[np.uint32]) -> float:
        """Estimated Jaccard similarity: the share of equal signature slots."""
        return float(np.mean(sig_a == sig_b))


def lsh_candidate_pairs(
    signatures: npt.NDArray[np.uint32], *, bands: int = 16, max_bucket: int = 200
) -> set[tuple[int, int]]:
    """Index pairs that share at least one LSH band (candidates for a near-duplicate check).

    With 64 slots in 16 bands of 4 rows, a pair at Jaccard 0.8 collides with probability
    ~0.9996 and one at 0.3 with ~0.12, so true near-duplicates are almost never missed while
    the all-pairs cost is avoided. Buckets larger than ``max_bucket`` (boilerplate text
    repeated thousands of times) are capped so one bucket cannot go quadratic; their members
    are chained instead (each paired with the first), which keeps them connected.
    """
    n, num_perm = signatures.shape
    if num_perm % bands:
        raise ValueError(f"bands={bands} must divide the signature length {num_perm}")
    rows = num_perm // bands
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        for i in range(n):
            buckets[block[i].tobytes()].append(i)
        for members in buckets.values():
            if len(members) < 2:
                continue
            if len(members) > max_bucket:
                first = members[0]
                pairs.update((first, other) for other in members[1:])
                continue
            for x in range(len(members)):
                for y in range(x + 1, len(members)):
                    pairs.add((members[x], members[y]))
    return pairs
