"""Progress bars for long steps: redrawn a few times a second, not on every item.

``enabled=None`` (the default of the commands' long steps) shows a bar only on a terminal,
so logs, pipes and tests get no bar characters."""

from __future__ import annotations

import time
from collections.abc import Callable

from tqdm import tqdm


class ThrottledBar:
    """Batch count and a postfix, pushed to tqdm at most once per ``interval`` seconds.

    Calling ``tqdm.set_postfix`` on every batch redraws every batch and defeats
    ``mininterval``; here the count and postfix are held back and flushed together.
    """

    def __init__(self, total: int | None, desc: str, enabled: bool | None = None,
                 interval: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 unit: str = "batch", **tqdm_kw) -> None:
        self.bar = tqdm(total=total, desc=desc, disable=None if enabled is None else not enabled,
                        leave=False,
                        unit=unit, mininterval=0, miniters=1, **tqdm_kw)
        self.desc, self.interval, self.clock = desc, interval, clock
        self.pending = 0
        self.postfix: str | Callable[[], str] = ""
        self.last = clock()

    def step(self, postfix: str | Callable[[], str] = "", n: int = 1) -> None:
        """One batch done; ``postfix`` describes the running state (e.g. loss and accuracy).
        A callable is called only when the bar redraws: reading a GPU value waits for the
        GPU, so a training loop passes one and does not wait on every batch."""
        self.pending += n
        self.postfix = postfix
        if self.clock() - self.last >= self.interval:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            text = self.postfix() if callable(self.postfix) else self.postfix
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(self.pending)
            self.pending = 0
        self.last = self.clock()

    def close(self) -> None:
        self.flush()
        self.bar.close()

    def __enter__(self) -> ThrottledBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
