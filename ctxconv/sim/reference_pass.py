"""One pass of the reference kernels over the test vectors, TFLM checked on the same inputs.

The pipeline runs once per image: its predictions give the accuracy, and every block call
(each candidate context of a contextual block included) is handed, with the very inputs
the reference kernels saw, to the real TFLM interpreter, so a difference is the block's
own. The images are split into contiguous shards, one forked worker process per shard
(TFLM runs one image at a time on one core; the shards use every core).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.progress import ThrottledBar
from ctxconv.runtimes.factory import ReferenceRunner, make_runners

CHUNK = 256  # images per pipeline call: the feature maps of a whole shard never sit in memory
MIN_SHARD = 200  # fewer images per worker cost more in start-up than they save
POLL_SECONDS = 1.0


@dataclass
class PassResult:
    """Predicted labels of every image; max |reference - TFLM| in LSB per block over the
    first ``checked`` images (an empty list when none was checked)."""

    predictions: np.ndarray
    diffs: list[int]
    checked: int


def default_workers() -> int:
    """Every core this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class _Recorder:
    """A reference runner that also runs TFLM on each call's inputs and keeps the largest
    difference per output, while ``check`` is on."""

    def __init__(self, reference: ReferenceRunner, tflm: Any, diffs: list[int], index: int):
        self.reference, self.tflm, self.diffs, self.index = reference, tflm, diffs, index
        self.check = False

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.reference.run(inputs)
        if self.check and self.tflm is not None:
            got = self.tflm.run(inputs)
            for name, ref in out.items():
                lsb = int(np.abs(ref.astype(np.int32) - got[name].astype(np.int32)).max())
                self.diffs[self.index] = max(self.diffs[self.index], lsb)
        return out


def run_shard(bundle: ExportBundle, raw: np.ndarray, mode: str, check: int,
              on_images=None, chunk: int = CHUNK) -> tuple[np.ndarray, list[int]]:
    """Predictions for ``raw``, TFLM compared on the first ``check`` images."""
    diffs = [0] * len(bundle.blocks)
    tflm = make_runners(bundle, "tflm") if check else [None] * len(bundle.blocks)
    recorders = [_Recorder(ReferenceRunner(g), t, diffs, i)
                 for i, (g, t) in enumerate(zip(bundle.graphs, tflm, strict=True))]
    pipe = BlockPipeline(bundle.manifest, recorders)  # type: ignore[arg-type]
    preds = []
    for start in range(0, len(raw), chunk):
        images = raw[start : start + chunk]
        compared = max(0, min(len(images), check - start))
        if 0 < compared < len(images):  # the checked part and the rest apart
            parts = [(images[:compared], True), (images[compared:], False)]
        else:
            parts = [(images, compared > 0)]
        for part, on in parts:
            for r in recorders:
                r.check = on
            preds.append(pipe.scores(pipe.quantize_images(part), mode).argmax(1))
        if on_images is not None:
            on_images(len(images))
    return (np.concatenate(preds) if preds else np.zeros(0, np.int64)), diffs


def _worker(bundle: ExportBundle, raw: np.ndarray, mode: str, check: int, chunk: int,
            shard: int, out: Any) -> None:
    try:
        preds, diffs = run_shard(bundle, raw, mode, check,
                                 on_images=lambda n: out.put(("images", shard, n)), chunk=chunk)
        out.put(("done", shard, (preds, diffs)))
    except BaseException as exc:  # reported to the parent, which raises it
        out.put(("error", shard, f"{type(exc).__name__}: {exc}"))


def reference_pass(bundle: ExportBundle, raw: np.ndarray, mode: str, check: int,
                   workers: int | None = None, chunk: int = CHUNK,
                   min_shard: int = MIN_SHARD) -> PassResult:
    """Predictions for every image of ``raw`` in ``mode``; the reference kernels checked
    against TFLM, block by block, on the first ``check`` images."""
    check = max(0, min(check, len(raw)))
    workers = default_workers() if workers is None else max(1, workers)
    workers = min(workers, max(1, len(raw) // max(1, min_shard)))
    what = "reference kernels" + (" vs TFLM" if check else "")
    with ThrottledBar(len(raw), what, unit="image") as bar:
        if workers == 1 or "fork" not in mp.get_all_start_methods():
            preds, diffs = run_shard(bundle, raw, mode, check,
                                     on_images=lambda n: bar.step(n=n), chunk=chunk)
            return PassResult(preds, diffs if check else [], check)
        bounds = np.linspace(0, len(raw), workers + 1).astype(int)
        results = _run_workers(bundle, raw, mode, check, chunk, bounds, bar)
    preds = np.concatenate([results[s][0] for s in range(workers)])
    diffs = [max(results[s][1][i] for s in range(workers)) for i in range(len(bundle.blocks))]
    return PassResult(preds, diffs if check else [], check)


def _run_workers(bundle: ExportBundle, raw: np.ndarray, mode: str, check: int, chunk: int,
                 bounds: np.ndarray, bar: ThrottledBar) -> dict[int, Any]:
    """One forked process per shard; their results by shard; a worker's failure raised."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = []
    for s in range(len(bounds) - 1):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        p = ctx.Process(target=_worker, daemon=True,
                        args=(bundle, raw[lo:hi], mode, max(0, min(check - lo, hi - lo)), chunk,
                              s, out))
        p.start()
        procs.append(p)
    results: dict[int, Any] = {}
    try:
        while len(results) < len(procs):
            try:
                kind, shard, value = out.get(timeout=POLL_SECONDS)
            except queue.Empty:
                dead = [s for s, p in enumerate(procs) if not p.is_alive() and s not in results]
                if dead and out.empty():
                    raise RuntimeError(f"reference pass: worker {dead[0]} ended without a "
                                       f"result (exit code {procs[dead[0]].exitcode})") from None
                continue
            if kind == "images":
                bar.step(n=value)
            elif kind == "error":
                raise RuntimeError(f"reference pass, worker {shard}: {value}")
            else:
                results[shard] = value
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    return results
