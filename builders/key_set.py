"""A set of keys in about 8 bytes a key, for streams of millions of rows.

Each key is kept as a 64-bit hash (blake2b): the recent ones in a Python set, merged now and then
into one sorted NumPy array, so a million keys take about 8 MB (a Python set of the strings would
take about 100 MB). Two different keys share a hash with a probability of about n² / 2⁶⁵ (3 in 10⁸
for a million keys), the same as the 16-hex-digit content ids the tables use for keys.
"""

from __future__ import annotations

import hashlib


class KeySet:
    MERGE = 1 << 16  # recent keys held in the set before they are merged into the array

    def __init__(self) -> None:
        import numpy as np

        self._np = np
        self._sorted = np.empty(0, dtype=np.uint64)
        self._recent: set[int] = set()

    def __len__(self) -> int:
        return self._sorted.size + len(self._recent)

    @staticmethod
    def digest(key: object) -> int:
        text = key if isinstance(key, str) else repr(key)
        return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")

    def add(self, key: object) -> bool:
        """Remember `key` (a string, or a tuple of values); False when it was there already."""
        d = self.digest(key)
        if d in self._recent:
            return False
        i = int(self._np.searchsorted(self._sorted, d))
        if i < self._sorted.size and int(self._sorted[i]) == d:
            return False
        self._recent.add(d)
        if len(self._recent) >= self.MERGE:
            self._merge()
        return True

    def _merge(self) -> None:
        np = self._np
        merged = np.concatenate((self._sorted, np.fromiter(self._recent, dtype=np.uint64, count=len(self._recent))))
        merged.sort()  # in place: the recent keys are new, so no key repeats
        self._sorted, self._recent = merged, set()
