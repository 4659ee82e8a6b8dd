"""Out-of-core dropout on Dask: a reduction over dropout of an array larger than memory.

The input is built lazily (``da.ones``), so no chunk exists until a task needs
it; each task draws its chunk's keep decisions with the NumPy kernel and the
sum reduces chunk by chunk. Peak memory is set by the chunk size and the number
of threads, not by the array. Reports wall time and the peak RSS of this process
(``resource.getrusage``, the local threaded scheduler runs everything here).

    python benchmarks/dask_out_of_core.py --log2-size 33 --chunk-mib 64
"""

from __future__ import annotations

import argparse
import resource
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log2-size", type=int, default=33, help="elements = 2**this (default 33: 32 GiB float32)")
    parser.add_argument("--chunk-mib", type=int, default=64, help="chunk size in MiB of float32 (default 64)")
    parser.add_argument("--p", type=float, default=0.5)
    parser.add_argument("--workers", type=int, default=2, help="threads of the local scheduler")
    args = parser.parse_args(argv)

    import dask
    import dask.array as da
    import numpy as np

    import xdrop
    from xdrop._lib._stream import effective_keep

    n = 2**args.log2_size
    chunk = args.chunk_mib * 2**20 // 4
    x = da.ones((n,), dtype=np.float32, chunks=chunk)
    start = time.perf_counter()
    out = xdrop.dropout(x, args.p, seed=2024, step=1)
    built = time.perf_counter() - start
    total = out.sum(dtype=np.float64)
    with dask.config.set(scheduler="threads", num_workers=args.workers):
        value = float(total.compute())
    wall = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    kept = value * effective_keep(args.p)  # each kept element contributes scale = 1 / keep
    print(f"elements        2**{args.log2_size} = {n} float32 ({n * 4 / 2**30:.1f} GiB)")
    print(f"chunks          {len(x.chunks[0])} x {chunk * 4 / 2**20:.0f} MiB, {args.workers} threads")
    print(f"graph built in  {built * 1e3:.1f} ms (lazy)")
    print(f"sum             {value!r} (kept {kept:.0f} = {kept / n:.6f} of elements)")
    print(f"wall time       {wall:.1f} s ({wall / n * 1e9:.2f} ns/element)")
    print(f"peak RSS        {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
