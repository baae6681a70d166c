"""CPython's cyclic garbage collector, tuned for a long-running server.

With the default thresholds a full collection walks every tracked object of
the process: the modules, settings and word-list structures loaded at start-up
as well as what the requests made. Under load that is a pause of tens of
milliseconds in the middle of streams, seen as the slowest first tokens (see
docs/performance.md for the measured effect). :func:`settle` is called by
``daehwa serve`` once start-up is complete.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle"]

#: Allocations (less deallocations) between two collections of the youngest
#: generation; CPython's default is 700.
YOUNG_THRESHOLD = 50_000


def settle() -> None:
    """Collect once, then keep what start-up made out of every later collection.

    ``gc.freeze`` moves every object alive now to a generation the collector
    never walks (they are still freed when their last reference goes), and the
    youngest generation is collected every :data:`YOUNG_THRESHOLD` allocations.
    The older generations keep their default ratios, so cyclic garbage is still
    reclaimed, in fewer and shorter passes.
    """
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
