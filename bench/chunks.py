"""The chunk source the streaming benches share: what a connector reads from `iter_content`, without a network."""

from __future__ import annotations

from collections.abc import Iterator

CHUNK = 64 * 1024


def pool_chunks(total: int, pool: bytes, chunk: int = CHUNK) -> Iterator[bytes]:
    """`total` bytes in `chunk`-sized pieces sliced from `pool` (wrapping around). Slicing makes a fresh bytes
    object per chunk, like a socket read, without paying for a random generator in the figures."""
    sent, offset = 0, 0
    while sent < total:
        n = min(chunk, total - sent)
        if offset + n > len(pool):
            offset = 0
        yield pool[offset : offset + n]
        offset += n
        sent += n
