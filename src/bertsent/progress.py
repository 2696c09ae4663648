"""Progress on stderr for long work (evaluation, prediction of many texts, export): rows, rows/s and ETA."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "rows") -> Iterator[Callable | None]:
    """A callable that advances a bar by n (fractions allowed: a long text's windows), or None when disabled.
    The bar goes to stderr, so stdout stays clean for the results; tqdm hides it when stderr is no terminal
    only if asked, so it is shown in logs as well (a line per update interval)."""
    if not enabled:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} " + unit + " [{elapsed}<{remaining}, {rate_fmt}]",
    )
    try:
        yield bar.update
    finally:
        bar.n = min(bar.n, total)
        bar.close()
