"""One pass of the reference kernels over the test vectors, TFLM checked on the same inputs.

The pipeline runs once per image: its predictions give the accuracy, and every block call
(each candidate context of a contextual block included) is handed, with the very inputs
the reference kernels saw, to the real TFLM interpreter, so a difference is the block's
own. The images are split into contiguous shards, one worker process per shard
(``shards``: TFLM runs one image at a time on one core; the shards use every core).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.progress import ThrottledBar
from ctxconv.runtimes.factory import ReferenceRunner, make_runners
from ctxconv.sim.shards import Progress, map_forked, shard_bounds

CHUNK = 256  # images per pipeline call: the feature maps of a whole shard never sit in memory
MIN_SHARD = 200  # fewer images per worker cost more in start-up than they save


@dataclass
class PassResult:
    """Predicted labels of every image; max |reference - TFLM| in LSB per block over the
    first ``checked`` images (an empty list when none was checked)."""

    predictions: np.ndarray
    diffs: list[int]
    checked: int


class Recorder:
    """A block's runner that also runs TFLM on each call's inputs and keeps the largest
    difference per output while ``check`` is on; ``last`` is the latest call's outputs."""

    def __init__(self, reference: Any, tflm: Any, diffs: list[int], index: int,
                 check: bool = False) -> None:
        self.reference, self.tflm, self.diffs, self.index = reference, tflm, diffs, index
        self.check = check
        self.last: dict[str, np.ndarray] = {}

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = self.last = self.reference.run(inputs)
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
    recorders = [Recorder(ReferenceRunner(g), t, diffs, i)
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


def reference_pass(bundle: ExportBundle, raw: np.ndarray, mode: str, check: int,
                   workers: int | None = None, chunk: int = CHUNK,
                   min_shard: int = MIN_SHARD) -> PassResult:
    """Predictions for every image of ``raw`` in ``mode``; the reference kernels checked
    against TFLM, block by block, on the first ``check`` images."""
    check = max(0, min(check, len(raw)))
    bounds = shard_bounds(len(raw), workers, min_shard)

    def shard(job: tuple[int, int], progress: Progress) -> tuple[np.ndarray, list[int]]:
        lo, hi = job
        return run_shard(bundle, raw[lo:hi], mode, max(0, min(check - lo, hi - lo)),
                         on_images=progress, chunk=chunk)

    what = "reference kernels" + (" vs TFLM" if check else "")
    with ThrottledBar(len(raw), what, unit="image") as bar:
        results = map_forked(shard, bounds, "reference pass", lambda n: bar.step(n=n))
    preds = np.concatenate([p for p, _ in results]) if results else np.zeros(0, np.int64)
    diffs = [max(d[i] for _, d in results) for i in range(len(bundle.blocks))]
    return PassResult(preds, diffs if check and len(raw) else [], check)
