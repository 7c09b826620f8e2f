"""Independent jobs in forked worker processes, with progress and failures reported back.

The simulator's long checks (the reference kernels against TFLM, the host build of the
generated C, the emulated MCU) run one image at a time on one core; their images split
into shards that run side by side. ``fork`` shares the parent's loaded export (no reload,
no pickling of graphs); where the platform has no ``fork``, the jobs run one after another
in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import queue
from collections.abc import Callable
from typing import Any

import numpy as np

POLL_SECONDS = 1.0
Progress = Callable[[int], None]


def default_workers() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def shard_bounds(n: int, workers: int | None, min_shard: int) -> list[tuple[int, int]]:
    """Contiguous (start, stop) ranges of ``n`` items: one per worker, each at least
    ``min_shard`` items long (fewer workers when there are few items)."""
    workers = default_workers() if workers is None else max(1, workers)
    workers = max(1, min(workers, n // max(1, min_shard)))
    edges = np.linspace(0, n, workers + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def _portable(exc: BaseException) -> BaseException:
    """The exception itself when it survives pickling (so the parent raises the same type
    with the same message), else a RuntimeError carrying its type and message."""
    try:
        copy = pickle.loads(pickle.dumps(exc))
        if type(copy) is type(exc) and str(copy) == str(exc):
            return exc
    except Exception:  # noqa: BLE001 - any unpicklable exception is carried as text
        pass
    return RuntimeError(f"{type(exc).__name__}: {exc}")


def _worker(fn: Callable[[Any, Progress], Any], job: Any, index: int, out: Any) -> None:
    try:
        result = fn(job, lambda n: out.put(("progress", index, n)))
        out.put(("done", index, result))
    except BaseException as exc:  # reported to the parent, which raises it
        out.put(("error", index, _portable(exc)))


def map_forked(fn: Callable[[Any, Progress], Any], jobs: list[Any], what: str,
               on_progress: Progress | None = None) -> list[Any]:
    """``fn(job, progress)`` for every job, each in its own forked process; the results in
    job order. A job that raises re-raises here with its own type and message (so callers
    catch a worker's error as they would catch it in this process); a process that dies
    without a result is a RuntimeError naming ``what``."""
    progress = on_progress or (lambda n: None)
    if len(jobs) <= 1 or "fork" not in mp.get_all_start_methods():
        return [fn(job, progress) for job in jobs]
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(fn, job, i, out), daemon=True)
             for i, job in enumerate(jobs)]
    for p in procs:
        p.start()
    results: dict[int, Any] = {}
    try:
        while len(results) < len(procs):
            try:
                kind, index, value = out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if not p.is_alive() and i not in results]
                if dead and out.empty():
                    raise RuntimeError(f"{what}: worker {dead[0]} ended without a result "
                                       f"(exit code {procs[dead[0]].exitcode})") from None
                continue
            if kind == "progress":
                progress(value)
            elif kind == "error":
                raise value
            else:
                results[index] = value
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return [results[i] for i in range(len(jobs))]
