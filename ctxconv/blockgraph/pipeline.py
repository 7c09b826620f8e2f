"""The exported block pipeline with context inputs, over any block runner (torch-free).

A runner is anything with ``run({name: (N, ...) array}) -> {name: (N, ...) array}``
(LiteRT, TFLM, onnxruntime, the simulator's own kernels). The manifest says how to
turn raw images into the first block's int8 input, which blocks take a context and
which blocks' goodness is summed into the class scores.

- ``onepass``: every block once; each block's ``scores`` output holds the goodness under
  all K contexts (linear in the one-hot context), summed over blocks (int8 exports: in
  fixed point, ``score_weights``, so every runtime gets the same integers).
- ``multipass``: one pass per candidate context from the first contextual block on; the
  context-free prefix runs once and is shared. Every later block (contextual or not) runs
  once per candidate on that candidate's features, and candidate c's score is the goodness
  of the pass with context c, summed over the scoring blocks. For a model without
  contextual blocks it equals onepass.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from ctxconv.blockgraph.manifest import first_contextual

#: Class scores of an int8 export are summed in fixed point: block i adds
#: (q - zero_point) * weight_i, weight_i = round(scale_i / max scale * 2^SCORE_BITS).
SCORE_BITS = 16
CONTEXT_ON, CONTEXT_OFF = 127, -128  # the one-hot context in int8 (scale 1/255, zp -128)


SAME_MODES_NOTE = ("multipass = onepass: no block takes a context, so both modes are the "
                   "same computation")


def modes_coincide(manifest: dict[str, Any]) -> bool:
    """True when the export offers both modes and they compute the same thing."""
    return len(manifest["modes"]) > 1 and not any(b["contextual"] for b in manifest["blocks"])


class BlockRunner(Protocol):
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def io_quant(block: dict[str, Any], name: str, kind: str = "outputs") -> tuple[float, int]:
    spec = next(t for t in block[kind] if t["name"] == name)
    return float(spec["scale"]), int(spec["zero_point"])


def score_output(block: dict[str, Any]) -> str:
    """A block's goodness output: ``goodness`` (N, 1), the one value of an energy goodness
    under the pass's context, or ``scores`` (N, K), a goodness linear in the context."""
    return "goodness" if any(o["name"] == "goodness" for o in block["outputs"]) else "scores"


def one_hot_int8(k: int, num_classes: int, n: int) -> np.ndarray:
    ctx = np.full((n, num_classes), CONTEXT_OFF, np.int8)
    ctx[:, k] = CONTEXT_ON
    return ctx


def one_hot_float(k: int, num_classes: int, n: int) -> np.ndarray:
    ctx = np.zeros((n, num_classes), np.float32)
    ctx[:, k] = 1.0
    return ctx


def score_weights(manifest: dict[str, Any]) -> tuple[list[int], float]:
    """Integer weight of each block's int8 scores in the class-score sum, and the real value
    of one unit of that sum.

    The sum is exact integer arithmetic, so every runtime (numpy, the generated C on any
    core) gets the same scores and the same top-1; weights are relative to the largest score
    scale to 2^-16, and 255 * 2^16 * blocks stays far below 2^31.
    """
    scales = [io_quant(b, score_output(b))[0] if b["score_block"] else 0.0
              for b in manifest["blocks"]]
    top = max(scales, default=0.0) or 1.0
    weights = [int(round(s / top * (1 << SCORE_BITS))) for s in scales]
    return weights, top / (1 << SCORE_BITS)


class BlockPipeline:
    """Blocks of an export (int8, or the float reference) in order; scores per mode."""

    def __init__(self, manifest: dict[str, Any], runners: list[BlockRunner]) -> None:
        if runners and len(runners) != len(manifest["blocks"]):
            raise ValueError(f"{len(runners)} runners for {len(manifest['blocks'])} blocks")
        self.manifest = manifest
        self.blocks = manifest["blocks"]
        self.runners = runners
        self.num_classes = int(manifest["dataset"]["num_classes"])
        self.int8 = bool(manifest["int8"])

    @property
    def modes(self) -> list[str]:
        return list(self.manifest["modes"])

    def quantize_images(self, raw: np.ndarray) -> np.ndarray:
        """Raw images (N, H, W, C) as stored (uint8 pixels) -> input of block 0."""
        norm = self.manifest["input"]
        x = raw.astype(np.float32) * np.float32(norm["pixel_scale"])
        x = (x - np.asarray(norm["mean"], np.float32)) / np.asarray(norm["std"], np.float32)
        if not self.int8:
            return x
        return quantize(x, *io_quant(self.blocks[0], "features_in", "inputs"))

    def _score_quant(self, block: dict[str, Any]) -> tuple[float, int]:
        return io_quant(block, score_output(block)) if self.int8 else (1.0, 0)

    def block_outputs(self, index: int, x: np.ndarray, context: np.ndarray | None = None
                      ) -> dict[str, np.ndarray]:
        inputs = {"features_in": x}
        if self.blocks[index]["contextual"]:  # later context-free blocks ignore ``context``
            inputs["context"] = context
        return self.runners[index].run(inputs)

    def scores(self, x: np.ndarray, mode: str) -> np.ndarray:
        """(N, K) class scores for block-0 inputs ``x`` (N, H, W, C)."""
        total = self.score_sums(x, mode)
        if not self.int8:
            return total
        return (total * score_weights(self.manifest)[1]).astype(np.float32)

    def score_sums(self, x: np.ndarray, mode: str) -> np.ndarray:
        """(N, K) summed class scores: int64 fixed point for int8 exports (``score_weights``,
        what the generated C returns), float32 for float exports."""
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} is not available for this export; "
                             f"available: {self.modes}")
        n = x.shape[0]
        total = np.zeros((n, self.num_classes), np.int64 if self.int8 else np.float32)
        weights = score_weights(self.manifest)[0] if self.int8 else []

        def score(i: int, q: np.ndarray) -> np.ndarray:
            if not self.int8:
                return q
            return (q.astype(np.int64) - self._score_quant(self.blocks[i])[1]) * weights[i]

        first = first_contextual(self.blocks)
        shared = len(self.blocks) if first is None else first
        for i in range(shared):  # context-free: once per image, all K scores at once
            out = self.block_outputs(i, x)
            if self.blocks[i]["score_block"]:
                total += score(i, out["scores"])
            x = out["features"]
        one_hot = one_hot_int8 if self.int8 else one_hot_float
        for k in range(self.num_classes if first is not None else 0):  # multipass only
            context, xk = one_hot(k, self.num_classes, n), x
            for i in range(shared, len(self.blocks)):  # every later block on k's features
                out = self.block_outputs(i, xk, context)
                if self.blocks[i]["score_block"]:  # class k: the goodness under context k
                    name = score_output(self.blocks[i])
                    total[:, k] += score(i, out[name][:, 0 if name == "goodness" else k])
                xk = out["features"]
        return total

    def predict_modes(self, raw: np.ndarray, modes: list[str]) -> dict[str, np.ndarray]:
        """Predictions per mode; without contextual blocks both modes run the same
        computation, so it runs once."""
        if len(modes) < 2 or not modes_coincide(self.manifest):
            return {mode: self.predict(raw, mode) for mode in modes}
        preds = self.predict(raw, modes[0])
        return dict.fromkeys(modes, preds)

    def predict(self, raw: np.ndarray, mode: str, batch_size: int = 256,
                on_batch: Callable[..., None] | None = None) -> np.ndarray:
        """Predicted labels for raw images, in batches (``on_batch(n=images)`` after each)."""
        preds = []
        for i in range(0, len(raw), batch_size):
            images = raw[i : i + batch_size]
            preds.append(self.scores(self.quantize_images(images), mode).argmax(1))
            if on_batch is not None:
                on_batch(n=len(images))
        return np.concatenate(preds) if preds else np.zeros(0, np.int64)
