"""The floor: decompress every data file and discard the output, on every core.

Usage: python bench/decompress_floor.py THREADS FILE...

Uses ISA-L (the fastest gzip decompressor available here, ~4x zlib); its decompress calls
release the GIL, so threads use every core.  Prints the decompressed byte count.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from isal import isal_zlib


def drain(path: str) -> int:
    total = 0
    decomp = isal_zlib.decompressobj(31)
    with open(path, "rb") as fh:
        while chunk := fh.read(8 << 20):
            total += len(decomp.decompress(chunk))
    return total


def main() -> None:
    threads = int(sys.argv[1])
    with ThreadPoolExecutor(threads) as pool:
        print(sum(pool.map(drain, sys.argv[2:])))


if __name__ == "__main__":
    main()
