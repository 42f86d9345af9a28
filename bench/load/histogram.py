"""The load generator's latency histogram: log-linear buckets of integer microseconds (HDR-style).

One per run, written by the event loop's thread only (no locking); `record` is O(1) and allocates nothing once
the bucket list covers the value.
"""

from __future__ import annotations

import math

_SUB_BITS = 11  # 2048 sub-buckets per power of two (1024 distinct per octave above 2048): <= 0.05 % error
_SUB = 1 << _SUB_BITS
_PRESIZE = _SUB + (_SUB >> 1) * 22  # values up to 2**33 us (~2.4 h) before the list grows
_NO_MIN = 1 << 62


class Histogram:
    """Log-linear latency histogram of integer microseconds (HDR-style, ~3 significant digits).

    Values below 2048 us are exact; above, each power of two is split in 1024 equal buckets, so a reported
    percentile is within 1/2048 (0.05 %) of the exact nearest-rank value. `record` is O(1); `max`/`min` are exact.
    """

    __slots__ = ("_counts", "_min", "count", "max_us", "sum_us")

    def __init__(self) -> None:
        self._counts: list[int] = [0] * _PRESIZE
        self.count = 0
        self.sum_us = 0
        self._min = _NO_MIN
        self.max_us = 0

    @property
    def min_us(self) -> int:
        return self._min if self.count else 0

    def record(self, value_us: int) -> None:
        """Add one value (microseconds; negatives count as 0)."""
        v = value_us if value_us > 0 else 0
        shift = v.bit_length() - _SUB_BITS
        idx = (shift << (_SUB_BITS - 1)) + (v >> shift) if shift > 0 else v
        try:
            self._counts[idx] += 1
        except IndexError:
            self._counts.extend([0] * (idx + 1 - len(self._counts)))
            self._counts[idx] += 1
        if v > self.max_us:
            self.max_us = v
        if v < self._min:
            self._min = v
        self.count += 1
        self.sum_us += v

    def merge(self, other: Histogram) -> None:
        """Add all of `other`'s values to this histogram."""
        if other.count == 0:
            return
        counts = self._counts
        if len(other._counts) > len(counts):
            counts.extend([0] * (len(other._counts) - len(counts)))
        for i, c in enumerate(other._counts):
            if c:
                counts[i] += c
        self._min = min(self._min, other._min)
        self.max_us = max(self.max_us, other.max_us)
        self.count += other.count
        self.sum_us += other.sum_us

    def _value_at(self, idx: int) -> float:
        if idx < _SUB:
            v = float(idx)
        else:
            shift = (idx >> (_SUB_BITS - 1)) - 1
            lo = (idx - (shift << (_SUB_BITS - 1))) << shift
            v = lo + ((1 << shift) - 1) / 2
        return min(max(v, float(self._min)), float(self.max_us))

    def percentile(self, p: float) -> float:
        """The nearest-rank p-th percentile (0 <= p <= 100) in milliseconds; 0.0 if empty; p=100 is the exact max."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile out of range: {p}")
        n = self.count
        if n == 0:
            return 0.0
        if p >= 100:
            return self.max_us / 1000
        rank = max(1, math.ceil(p * n / 100 - 1e-9))
        acc = 0
        for idx, c in enumerate(self._counts):
            if c:
                acc += c
                if acc >= rank:
                    return self._value_at(idx) / 1000
        return self.max_us / 1000

    def summary(self) -> dict[str, float | int]:
        """count, and min/mean/p50/p90/p99/p99.9/max in milliseconds (all 0.0 when empty)."""
        n = self.count
        return {
            "count": n,
            "min": self.min_us / 1000,
            "mean": self.sum_us / n / 1000 if n else 0.0,
            "p50": self.percentile(50),
            "p90": self.percentile(90),
            "p99": self.percentile(99),
            "p99.9": self.percentile(99.9),
            "max": self.max_us / 1000,
        }
