"""Near-copy search through a multi-index hash: the same pairs as comparing all pairs, found from an index.

``grouping._all_pairs`` (every pair compared, the search as it was) is the reference. The sets are made
to catch what an index gets wrong: pairs at every distance up to and just past ``max_bits``, with the
differing bits spread over every substring, crowded buckets (many equal hashes, many sharing the low
bits), and one hash in the set.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from visionops.data import grouping


def _flip(h: np.uint64, bits: np.ndarray) -> np.uint64:
    mask = 0
    for b in bits:
        mask |= 1 << int(b)
    return np.uint64(int(h) ^ mask)


def _hashes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, 400, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, 400
    ).astype(np.uint64)
    planted = [
        _flip(base[k], rng.choice(64, size=k % 10, replace=False))  # 0 to 9 bits from base[k]
        for k in range(300)
    ]
    crowd = np.full(60, base[0], dtype=np.uint64)  # one bucket of 61 equal hashes
    low = (base[1] & ~np.uint64(0xFF)) | rng.integers(0, 256, 80).astype(
        np.uint64
    )  # same high bits
    return np.concatenate([base, np.array(planted, dtype=np.uint64), crowd, low])


def _as_set(i, j, bits) -> set[tuple[int, int, int]]:
    return set(zip(i.tolist(), j.tolist(), bits.tolist(), strict=True))


@pytest.mark.parametrize("max_bits", range(0, 10))
def test_the_index_finds_exactly_the_pairs_all_pairs_finds(max_bits):
    hashes = _hashes(max_bits)
    ref = grouping._all_pairs(hashes, max_bits)
    assert len(ref[0]) > 1800  # the crowd alone holds 61 * 60 / 2 = 1830 pairs
    # Every way of cutting the hash: exact substrings (parts = max_bits + 1) down to one whole hash
    # searched within max_bits (parts = 1), and the default for this many hashes.
    cuts = [
        p
        for p in range(1, max_bits + 2)
        if sum(math.comb(64 // p, r) for r in range(max_bits // p + 1)) < 3000
    ]
    assert max_bits + 1 in cuts and (max_bits > 2 or 1 in cuts)
    for parts in [None, *cuts]:
        i, j, bits = grouping.hash_pairs(hashes, max_bits, parts)
        assert _as_set(i, j, bits) == _as_set(*ref), parts
        assert len(i) == len(ref[0])  # each pair once
        assert np.all(i < j) and np.all(bits <= max_bits)
        assert np.array_equal(np.lexsort((j, i)), np.arange(len(i)))  # sorted by (i, j), as before


def test_more_hashes_get_longer_substrings():
    parts = [grouping._best_parts(n, 4) for n in (1_000, 100_000, 10_000_000)]
    assert parts == sorted(parts, reverse=True) and parts[0] == 5 and parts[-1] < 5, parts


def test_the_index_prunes_on_distinct_hashes():
    """On distinct random hashes the candidates sharing a substring are a small share of all pairs."""
    hashes = np.random.default_rng(7).integers(0, 2**63, 4000, dtype=np.uint64)
    candidates = sum(
        len(grouping._close_key_pairs(key, width, 0)[0])
        for key, width in grouping.substring_keys(hashes, 5)
    )
    assert candidates < 0.01 * 4000 * 3999 / 2
    assert len(grouping.hash_pairs(hashes, 4)[0]) == len(grouping._all_pairs(hashes, 4)[0])


def test_one_hash_or_none_has_no_pairs():
    for hashes in (np.zeros(0, np.uint64), np.ones(1, np.uint64)):
        i, j, bits = grouping.hash_pairs(hashes, 4)
        assert len(i) == len(j) == len(bits) == 0


def test_near_copy_pairs_confirms_the_index_by_the_thumbnails():
    rng = np.random.default_rng(3)
    hashes = _hashes(3)[:500]
    thumbs = [rng.integers(0, 256, 256, dtype=np.uint8) for _ in hashes]
    thumbs[401] = thumbs[1].copy()  # planted 1 bit from base[1], the same thumbnail
    frame = pd.DataFrame(
        {"dhash": [f"{int(h):016x}" for h in hashes], "thumb": [t.tobytes() for t in thumbs]}
    )
    i, j, diff, bits = grouping.near_copy_pairs(frame["dhash"], frame["thumb"], 4, 5.0)
    assert (1, 401) in set(zip(i.tolist(), j.tolist(), strict=True))
    assert np.all(diff <= 5.0) and np.all(bits <= 4)
