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

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, depth_first_order

_BLOCK = 1024  # rows per block of the all-pairs hash comparison: a block x N uint8 matrix in memory
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

    Cost: N^2 / 2 64-bit XOR + popcounts, vectorised in blocks of ``_BLOCK`` rows (5,000 images:
    12.5M comparisons, well under a second; memory _BLOCK x N bytes), plus 256 byte-differences per
    hash candidate. Fine for several thousand images; beyond ~50k a hash index (BK-tree, LSH)
    would be needed. The thumbnail confirms the hash because on small or simple images (8x8 digits,
    objects on black) unrelated pictures share a dHash within a few bits.
    """
    valid = dhash.notna().to_numpy() & thumb.notna().to_numpy()
    pos = np.flatnonzero(valid)
    empty = np.zeros(0, np.int64)
    if len(pos) < 2:
        return empty, empty, np.zeros(0), empty
    hashes = np.array([int(h, 16) for h in dhash.to_numpy()[pos]], dtype=np.uint64)
    thumbs = np.stack([np.frombuffer(t, np.uint8) for t in thumb.to_numpy()[pos]]).astype(np.int16)
    found_i, found_j, found_bits = [], [], []
    for start in range(0, len(pos), _BLOCK):
        block = hashes[start : start + _BLOCK]
        bits = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(bits <= max_bits)
        rows = rows + start
        upper = cols > rows  # each unordered pair once
        found_i.append(rows[upper])
        found_j.append(cols[upper])
        found_bits.append(bits[rows[upper] - start, cols[upper]])
    ci, cj, cbits = (np.concatenate(a) for a in (found_i, found_j, found_bits))
    diff = np.empty(len(ci))
    for s in range(0, len(ci), _PAIR_CHUNK):
        a, b = ci[s : s + _PAIR_CHUNK], cj[s : s + _PAIR_CHUNK]
        diff[s : s + _PAIR_CHUNK] = np.abs(thumbs[a] - thumbs[b]).mean(axis=1)
    keep = diff <= max_diff
    return pos[ci[keep]], pos[cj[keep]], np.round(diff[keep], 3), cbits[keep].astype(np.int64)


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
