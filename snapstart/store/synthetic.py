"""Synthetic CRIU-like page data, for the store's tests and benchmarks (the store
never uses it).

The mix imitates a dumped Python process: 15 % zero pages, 20 % random (compressed
or encrypted data), 20 % copies from a small pool (shared libraries' pages), and
45 % heap pages -- pointers, small integers and common strings -- each with a few
words changed, as two heaps built by the same code are.
"""

from __future__ import annotations

import random
import struct

from .chunking import PAGE

__all__ = ["fill_pages"]

ZERO = bytes(PAGE)
_WORDS = [b"handler\0", b"__init__", b"request\0", b"json.dum", b"utf-8\0\0\0",
          b"/var/tas", b"Content-", b"boto3\0\0\0", b"lambda\0\0", b"response"]


def _heap_page(rng: random.Random) -> bytes:
    words = []
    for _ in range(PAGE // 8):
        r = rng.random()
        if r < 0.45:
            words.append(struct.pack("<Q", 0x7F0000000000 + rng.randrange(1 << 24) * 16))
        elif r < 0.75:
            words.append(struct.pack("<Q", rng.randrange(256)))
        else:
            words.append(rng.choice(_WORDS))
    return b"".join(words)


def fill_pages(rng: random.Random, n_pages: int) -> bytearray:
    """``n_pages`` pages of the mix above, drawn from ``rng`` (deterministic)."""
    pool = [rng.randbytes(PAGE) for _ in range(16)]
    heap = [_heap_page(rng) for _ in range(64)]
    out = bytearray()
    for _ in range(n_pages):
        r = rng.random()
        if r < 0.15:
            out += ZERO
        elif r < 0.35:
            out += rng.randbytes(PAGE)
        elif r < 0.55:
            out += pool[rng.randrange(len(pool))]
        else:
            page = bytearray(heap[rng.randrange(len(heap))])
            for _ in range(8):
                j = rng.randrange(PAGE // 8) * 8
                page[j:j + 8] = rng.randbytes(8)
            out += page
    return out
