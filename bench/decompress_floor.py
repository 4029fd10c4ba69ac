"""The floor: decompress every data file and discard the output, on every core.

Usage: python bench/decompress_floor.py [--igzip | --8mb] THREADS FILE...

A tight ISA-L loop (the fastest gzip decompressor available here; figures in docs/performance.md):
256 KB reads and at most 1 MB of output per call (``max_length``), so the output buffers stay
small, hot in the cache and already faulted in.  The earlier version read 8 MB at a time and let
each call return all of its output at once: much of its CPU went to the kernel zeroing freshly
faulted pages, which overstated the floor (docs/performance.md).  ISA-L's calls release the GIL, so threads use
every core.  Every gzip member of a file is read.  Prints the decompressed byte count.

``--igzip`` runs ``python -m isal.igzip -d -c FILE > /dev/null`` per file instead, THREADS at a
time (interpreter starts included); ``--8mb`` is the earlier loop, for comparison.  bench/run.py
runs all three and takes the one with the least CPU as the floor.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from isal import isal_zlib

READ = 256 << 10
OUT = 1 << 20


def drain(path: str) -> int:
    total = 0
    decomp = isal_zlib.decompressobj(31)
    with open(path, "rb") as fh:
        while chunk := fh.read(READ):
            while chunk:
                total += len(decomp.decompress(chunk, OUT))
                chunk = decomp.unconsumed_tail
                if decomp.eof:  # the next gzip member, if any
                    chunk, decomp = decomp.unused_data, isal_zlib.decompressobj(31)
        total += len(decomp.flush())
    return total


def drain_8mb(path: str) -> int:
    """The earlier floor: 8 MB reads, each call's whole output at once."""
    total = 0
    decomp = isal_zlib.decompressobj(31)
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            total += len(decomp.decompress(chunk))
    return total


def igzip(path: str) -> int:
    subprocess.run([sys.executable, "-m", "isal.igzip", "-d", "-c", path], stdout=subprocess.DEVNULL, check=True)
    return 0


def main() -> None:
    args = sys.argv[1:]
    work = drain
    if args[0] in ("--igzip", "--8mb"):
        work = igzip if args[0] == "--igzip" else drain_8mb
        args = args[1:]
    with ThreadPoolExecutor(int(args[0])) as pool:
        print(sum(pool.map(work, args[1:])))


if __name__ == "__main__":
    main()
