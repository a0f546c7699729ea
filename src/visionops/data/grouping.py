"""Exact duplicates, near-copy pairs and bounded near-copy groups: what the split must keep together.

Why groups are bounded. Near-copies chain: a turntable's neighbouring views, a burst of photos.
Keeping every connected component in one split would put a whole chain (often a whole class) in
one split, so the class never reaches val or test. A component larger than its bound is therefore
cut into pieces of at most ``bound`` images, contiguous along a depth-first traversal of the
component (for a chain or a ring the traversal walks along it), so each piece is a run of
neighbouring views and only the few links between consecutive pieces cross a cut. Those links are
the only near-copies that can still straddle the split; they are counted, reported by validation,
and the held-out images they touch are left out of the clean test figures (``test_clean.npy``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, depth_first_order

# Rows per block of the all-pairs comparison (a wide max_bits): a block x N uint8 matrix in memory.
_BLOCK = 1024
_PAIR_CHUNK = 200_000  # candidate pairs whose thumbnails are compared at once (256 bytes each)


@dataclass(frozen=True)
class Duplicates:
    """Exact copies (same sha256): which rows are dropped, which file each copies, label conflicts."""

    duplicate_of: list[str | None]  # per row: the kept file this row copies (dropped rows only)
    conflict: list[str | None]  # per row: the other files and labels, when a copy has another label

    @property
    def dropped(self) -> np.ndarray:
        return np.array([d is not None for d in self.duplicate_of], dtype=bool)


def find_duplicates(manifest: pd.DataFrame, split: np.ndarray | None = None) -> Duplicates:
    """Keep the first file by path of each sha256 (per split, when the split is given by the user);
    the others are dropped. Copies under different labels are conflicts (both rows say so)."""
    n = len(manifest)
    duplicate_of: list[str | None] = [None] * n
    conflict: list[str | None] = [None] * n
    frame = pd.DataFrame(
        {
            "path": manifest["path"].astype(str).to_numpy(),
            "label": manifest["label"].to_numpy(),
            "sha": manifest["sha256"].to_numpy(),
            "pos": np.arange(n),
        }
    )
    frame["part"] = "" if split is None else np.asarray(split, dtype=object)
    frame = frame[frame["sha"].notna()]
    for _, same in frame[frame.duplicated("sha", keep=False)].groupby("sha", sort=False):
        same = same.sort_values("path")
        labels = same["label"].astype("string").fillna("<none>")
        if labels.nunique() > 1:
            for pos, path, label in zip(same["pos"], same["path"], labels, strict=True):
                others = [
                    f"{p} ({lab})" for p, lab in zip(same["path"], labels, strict=True) if p != path
                ]
                conflict[pos] = f"labelled {label!r}; same content as " + ", ".join(others)
        # A user-given split keeps one copy per split: copies across splits are leakage, found later.
        for _, part in same.groupby("part", sort=False):
            keep = part["path"].iloc[0]
            for pos in part["pos"].iloc[1:]:
                duplicate_of[pos] = keep
    return Duplicates(duplicate_of, conflict)


def near_copy_pairs(
    dhash: pd.Series, thumb: pd.Series, max_bits: int, max_diff: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``i < j`` (row positions) whose 64-bit dHash differ by at most ``max_bits`` bits and
    whose 16x16 grey thumbnails differ by at most ``max_diff`` (mean absolute, 0-255): (i, j, diff, bits).

    The hash pairs come from ``hash_pairs`` (an index, not all pairs, for ``max_bits`` up to
    ``_MIH_MAX_BITS``), plus 256 byte-differences per hash candidate. The thumbnail confirms the hash
    because on small or simple images (8x8 digits, objects on black) unrelated pictures share a dHash
    within a few bits.
    """
    valid = dhash.notna().to_numpy() & thumb.notna().to_numpy()
    pos = np.flatnonzero(valid)
    empty = np.zeros(0, np.int64)
    if len(pos) < 2:
        return empty, empty, np.zeros(0), empty
    hashes = np.array([int(h, 16) for h in dhash.to_numpy()[pos]], dtype=np.uint64)
    thumbs = np.stack([np.frombuffer(t, np.uint8) for t in thumb.to_numpy()[pos]]).astype(np.int16)
    ci, cj, cbits = hash_pairs(hashes, max_bits)
    diff = np.empty(len(ci))
    for s in range(0, len(ci), _PAIR_CHUNK):
        a, b = ci[s : s + _PAIR_CHUNK], cj[s : s + _PAIR_CHUNK]
        diff[s : s + _PAIR_CHUNK] = np.abs(thumbs[a] - thumbs[b]).mean(axis=1)
    keep = diff <= max_diff
    return pos[ci[keep]], pos[cj[keep]], np.round(diff[keep], 3), cbits[keep].astype(np.int64)


# Multi-index hashing pays while its substrings keep at least 8 bits.
_MIH_MAX_BITS = 7


def hash_pairs(
    hashes: np.ndarray, max_bits: int, parts: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of 64-bit hashes (uint64) within ``max_bits`` bits: (i, j, bits), sorted.

    Multi-index hashing (Norouzi, Punjani and Fleet, 2012): cut the 64 bits into ``parts``
    substrings; two hashes within ``max_bits`` bits differ by at most ``max_bits // parts`` bits on
    at least one of them (the pigeonhole principle). The candidates are the pairs whose substrings lie
    that close, found by sorting and looking up each substring's variants; each candidate is then
    checked on the whole hash. ``parts`` (by default) minimises the expected lookups plus candidates
    for this many hashes: more images, longer substrings, so the candidates stay few (for 100,000
    random hashes and 4 bits, about 3M candidates against 5 x 10^9 pairs). Written here rather than
    taken from a library: the exact search is these few lines of numpy, where FAISS's binary
    multi-hash index would add a large native dependency for the same pairs. Above ``_MIH_MAX_BITS``
    the substrings get too short to prune, and all pairs are compared in blocks.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    n = len(hashes)
    if max_bits > _MIH_MAX_BITS and parts is None:
        return _all_pairs(hashes, max_bits)
    parts = parts or _best_parts(n, max_bits)
    radius = max_bits // parts
    found_i, found_j, found_bits = [], [], []
    for key, width in substring_keys(hashes, parts):
        i, j = _same_key_pairs(key) if radius == 0 else _close_key_pairs(key, width, radius)
        bits = np.bitwise_count(hashes[i] ^ hashes[j])
        close = bits <= max_bits
        found_i.append(i[close])
        found_j.append(j[close])
        found_bits.append(bits[close])
    i, j, bits = (np.concatenate(a) for a in (found_i, found_j, found_bits))
    # A pair close on several substrings was found once for each: keep one, in (i, j) order.
    stride = max(n, 1)
    code, first = np.unique(i.astype(np.int64) * stride + j, return_index=True)
    return code // stride, code % stride, bits[first].astype(np.int64)


def substring_keys(hashes: np.ndarray, parts: int) -> list[tuple[np.ndarray, int]]:
    """The 64-bit hashes cut into ``parts`` disjoint substrings of near-equal width: (keys, width)."""
    cuts = [64 * k // parts for k in range(parts + 1)]
    return [
        ((hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1), hi - lo)
        for lo, hi in zip(cuts, cuts[1:], strict=False)
    ]


def _variants(width: int, radius: int) -> list[int]:
    """The XOR masks of ``width`` bits with at most ``radius`` bits set."""
    return [
        sum(1 << b for b in bits)
        for r in range(radius + 1)
        for bits in combinations(range(width), r)
    ]


def _best_parts(n: int, max_bits: int) -> int:
    """The number of substrings with the least expected work: lookups plus candidate pairs, for ``n``
    random hashes (a substring of b bits and radius s: n * V lookups, n^2 * V / 2^(b+1) candidates).
    A lookup (a binary search and its bookkeeping) weighs about 32 candidate checks: measured with
    bench/near_copies.py, where exact substrings stay faster up to at least 640,000 hashes."""

    def cost(parts: int) -> float:
        width, radius = 64 // parts, max_bits // parts
        variants = sum(math.comb(width, r) for r in range(radius + 1))
        return parts * (32 * n * variants + n * n * variants / 2 ** (width + 1))

    return min(range(1, max_bits + 2), key=cost)


def _same_key_pairs(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of positions with equal keys, in time proportional to the pairs (the
    radius-0 case of ``_close_key_pairs``, about three times faster: no lookups, no self-pairs)."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    sizes = np.diff(np.r_[starts, len(key)])
    end = np.repeat(starts + sizes, sizes)  # per sorted position: where its bucket ends
    at = np.flatnonzero(end - np.arange(len(key)) > 1)  # positions with a partner after them
    pairs_i, pairs_j = [], []
    step = 1
    while len(at):
        a, b = order[at], order[at + step]
        pairs_i.append(np.minimum(a, b))
        pairs_j.append(np.maximum(a, b))
        step += 1
        at = at[at + step < end[at]]  # positions with a partner ``step`` further in their bucket
    if not pairs_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pairs_i).astype(np.int64), np.concatenate(pairs_j).astype(np.int64)


def _close_key_pairs(key: np.ndarray, width: int, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``i < j`` of positions whose keys (``width`` bits) differ by at most ``radius`` bits,
    in time proportional to the lookups and the pairs."""
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    pairs_i, pairs_j = [], []
    for mask in _variants(width, radius):
        target = key ^ np.uint64(mask)
        lo = np.searchsorted(sorted_key, target, "left")
        hi = np.searchsorted(sorted_key, target, "right")
        count = hi - lo
        if not count.any():
            continue
        a = np.repeat(np.arange(len(key)), count)
        offset = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        b = order[np.repeat(lo, count) + offset]
        keep = a < b  # each unordered pair once (the other order comes with the same mask)
        pairs_i.append(a[keep])
        pairs_j.append(b[keep])
    if not pairs_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(pairs_i).astype(np.int64), np.concatenate(pairs_j).astype(np.int64)


def _all_pairs(hashes: np.ndarray, max_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` within ``max_bits`` bits by comparing all pairs, in blocks of ``_BLOCK``
    rows (memory _BLOCK x N bytes): for a wide ``max_bits``, and the reference the index is tested on."""
    found_i, found_j, found_bits = [], [], []
    for start in range(0, len(hashes), _BLOCK):
        block = hashes[start : start + _BLOCK]
        bits = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(bits <= max_bits)
        upper = cols > rows + start  # each unordered pair once
        found_i.append(rows[upper] + start)
        found_j.append(cols[upper])
        found_bits.append(bits[rows[upper], cols[upper]])
    if not found_i:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return tuple(np.concatenate(a).astype(np.int64) for a in (found_i, found_j, found_bits))


def components(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Connected component id per node of the undirected graph with edges (i, j)."""
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n)).tocsr()
    return connected_components(graph, directed=False)[1]


def cut_components(
    n: int, i: np.ndarray, j: np.ndarray, bound: np.ndarray
) -> tuple[np.ndarray, int]:
    """Group id per node: connected components, each one larger than ``bound[node]`` (the smallest
    bound among its nodes applies) cut into contiguous pieces of at most that size along a
    depth-first traversal started at a node of lowest degree (the end of a chain). Returns the group
    ids and how many components were cut. See the module docstring for why this is sound."""
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n)).tocsr()
    graph = graph + graph.T
    comp = connected_components(graph, directed=False)[1]
    group = comp.copy()
    next_id, n_cut = int(comp.max()) + 1 if n else 0, 0
    degree = np.diff(graph.indptr)
    sizes = np.bincount(comp, minlength=int(comp.max()) + 1 if n else 0)
    for c in np.flatnonzero(sizes > 1):
        members = np.flatnonzero(comp == c)
        limit = max(1, int(bound[members].min()))
        if len(members) <= limit:
            continue
        start = members[np.lexsort((members, degree[members]))[0]]  # lowest degree, then lowest row
        order = depth_first_order(graph, start, directed=False, return_predecessors=False)
        n_pieces = -(-len(order) // limit)
        for k, piece in enumerate(np.array_split(order, n_pieces)):
            if k:  # the first piece keeps the component's id
                group[piece] = next_id
                next_id += 1
        n_cut += 1
    return group, n_cut
