"""The latency-bucket schema shared by the SDK, the agent, the distributor and the controller.

A call of ``d`` nanoseconds is counted in bucket ``k = d.bit_length()``: bucket
0 holds ``d == 0`` and bucket ``k >= 1`` holds ``2**(k-1) <= d < 2**k``, so
every call in bucket ``k`` took less than ``bucket_upper_ns(k) == 2**k`` ns.
There are :data:`MAX_LATENCY_BUCKETS` of them (bucket 63 ends near 292 years).

* The SDK counts each call with :data:`bucket_of` and exports cumulative
  counts at some of the bounds ``2**k``.
* The agent turns those back into non-cumulative counts, index ``k`` for the
  bound ``2**k`` (:func:`bucket_of_upper_ns`), and reports at most
  :data:`MAX_LATENCY_BUCKETS` of them.
* The distributor refuses a report with more.
* The controller reads bucket ``k`` as "at most :func:`bucket_upper_seconds`".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

MAX_LATENCY_BUCKETS: Final = 64
"""How many latency buckets there are: indexes 0 to 63."""

LATENCY_BUCKETS_SCHEMA: Final = (
    f"non-cumulative counts, at most {MAX_LATENCY_BUCKETS}; "
    "bucket k holds calls with 2**(k-1) <= ns < 2**k (bucket 0: 0 ns)"
)
"""The schema in one line, for field descriptions and error messages."""

bucket_of: Final[Callable[[int], int]] = int.bit_length
"""The bucket of a call that took ``elapsed_ns`` nanoseconds (``elapsed_ns >= 0``).

``int.bit_length`` itself rather than a function that calls it: the SDK pays
this on every call, and a Python frame around it measured about 15 ns more per call.
"""


def bucket_upper_ns(k: int) -> int:
    """The exclusive upper bound of bucket ``k``, in nanoseconds: ``2**k``."""
    return 1 << k


def bucket_upper_seconds(k: int) -> float:
    """The upper bound of bucket ``k`` in seconds, as analysis thresholds are written."""
    return bucket_upper_ns(k) / 1e9


def bucket_of_upper_ns(upper_ns: int) -> int:
    """The bucket whose upper bound is ``upper_ns`` (the inverse of :func:`bucket_upper_ns`).

    For a bound that is not a power of two, the last bucket whose upper bound
    is below it; -1 for 0, which bounds no bucket (``upper_ns >= 0``).
    """
    return upper_ns.bit_length() - 1
