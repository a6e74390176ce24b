"""The interpreter settings a serving process takes once start-up is done.

- The garbage collector: what start-up built (modules, functions, config, the RADIUS
  dictionary) lives as long as the process. Frozen, the collector stops walking it; without
  this every full collection, a few thousand requests apart, traversed all of it (under
  callgrind about 6 % of a cached RADIUS answer's instructions). Garbage is collected first.
- The GIL switch interval, 1 ms instead of CPython's 5: the event loop owns the main thread,
  and the helper threads (the log writer, the store's and the KDF's workers, the state bus)
  each need the GIL now and then for a few lines of Python. A helper that wants it waits until
  the interval has passed before it asks the holder to let go, and meanwhile uvloop lets go and
  takes the GIL back around every callback, each time waking the waiting helper for nothing (a
  futex call on both sides, and a context switch). When the loop never idles (one worker at
  full load) that wait is where the CPU went: one saturated worker answering cached RADIUS PAP
  spent 26-30 µs of CPU per request, against 21-23 µs for each of two workers that were not
  saturated, and its log writer made about 3,000 context switches a second
  (docs/scale-out.md, "Why one saturated worker cost more per request"). A shorter wait
  makes each hand-off cheap; the event loop gives up the GIL to a helper at most once a
  millisecond, which costs it nothing it would notice.
"""

from __future__ import annotations

import gc
import sys

#: Seconds a thread waiting for the GIL lets pass before it asks the holder to let go.
SWITCH_INTERVAL = 0.001


def settle_for_serving() -> None:
    """Collect and freeze start-up's objects, and shorten the GIL switch interval."""
    gc.collect()
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL)
