"""Near-copy hash search: the multi-index hash against comparing all pairs, as the set grows.

    .venv/bin/python bench/near_copies.py [--sizes 10000 40000 160000] [--max-bits 4]

Distinct photos have unrelated dHashes: the bench draws random 64-bit hashes and plants 1% near-copies
(1-3 bits apart), then times ``grouping.hash_pairs`` (the index) and ``grouping._all_pairs`` (every
pair, the search as it was; skipped past ``--all-pairs-up-to``) on the same hashes, checks that both
find the same pairs, and prints each time, the ratio, and the growth exponent of each between sizes
(1 = linear, 2 = all pairs). Both run in this one process, one after the other.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from visionops.data import grouping


def hashes(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2)
    copies = rng.choice(n, n // 100, replace=False)
    sources = rng.choice(n, n // 100)
    for c, s in zip(copies, sources, strict=True):
        flip = 0
        for b in rng.choice(64, int(rng.integers(1, 4)), replace=False):
            flip |= 1 << int(b)
        out[c] = np.uint64(int(out[s]) ^ flip)
    return out


def timed(fn, *args):  # noqa: ANN001, ANN202
    start = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 40_000, 160_000])
    ap.add_argument("--max-bits", type=int, default=4)
    ap.add_argument("--all-pairs-up-to", type=int, default=40_000)
    args = ap.parse_args()
    rows = []
    print(f"{'images':>9} {'pairs':>7} {'index s':>9} {'all pairs s':>12} {'ratio':>7}")
    for n in args.sizes:
        h = hashes(n)
        t_index, found = timed(grouping.hash_pairs, h, args.max_bits)
        t_all = None
        if n <= args.all_pairs_up_to:
            t_all, ref = timed(grouping._all_pairs, h, args.max_bits)
            assert np.array_equal(found[0], ref[0]) and np.array_equal(found[1], ref[1]), n
        rows.append((n, t_index, t_all))
        ratio = f"{t_all / t_index:7.1f}" if t_all else "      -"
        shown = f"{t_all:12.2f}" if t_all else "           -"
        print(f"{n:9d} {len(found[0]):7d} {t_index:9.2f} {shown} {ratio}")
    for (n0, i0, a0), (n1, i1, a1) in zip(rows, rows[1:], strict=False):
        grow = math.log(n1 / n0)
        line = f"{n0} -> {n1}: index exponent {math.log(i1 / i0) / grow:.2f}"
        if a0 and a1:
            line += f", all pairs exponent {math.log(a1 / a0) / grow:.2f}"
        print(line)


if __name__ == "__main__":
    main()
