"""The exported block pipeline with context inputs, over any block runner (torch-free).

A runner is anything with ``run({name: (N, ...) array}) -> {name: (N, ...) array}``
(LiteRT, TFLM, onnxruntime, the simulator's own kernels). The manifest says how to
turn raw images into the first block's int8 input, which blocks take a context and
which blocks' goodness is summed into the class scores.

- ``onepass``: every block once; each block's ``scores`` output holds the goodness under
  all K contexts (linear in the one-hot context), dequantized and summed.
- ``multipass``: one pass per candidate context from the first contextual block on; the
  context-free prefix runs once and is shared. Candidate c's score is the goodness of
  the pass with context c. For a model without contextual blocks it equals onepass.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

CONTEXT_ON, CONTEXT_OFF = 127, -128  # the one-hot context in int8 (scale 1/255, zp -128)


class BlockRunner(Protocol):
    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


def quantize(x: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return np.clip(np.round(x / scale) + zero_point, -128, 127).astype(np.int8)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - zero_point) * np.float32(scale)


def io_quant(block: dict[str, Any], name: str, kind: str = "outputs") -> tuple[float, int]:
    spec = next(t for t in block[kind] if t["name"] == name)
    return float(spec["scale"]), int(spec["zero_point"])


def one_hot_int8(k: int, num_classes: int, n: int) -> np.ndarray:
    ctx = np.full((n, num_classes), CONTEXT_OFF, np.int8)
    ctx[:, k] = CONTEXT_ON
    return ctx


def one_hot_float(k: int, num_classes: int, n: int) -> np.ndarray:
    ctx = np.zeros((n, num_classes), np.float32)
    ctx[:, k] = 1.0
    return ctx


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
        return io_quant(block, "scores") if self.int8 else (1.0, 0)

    def block_outputs(self, index: int, x: np.ndarray, context: np.ndarray | None = None
                      ) -> dict[str, np.ndarray]:
        inputs = {"features_in": x}
        if self.blocks[index]["contextual"]:
            inputs["context"] = context
        return self.runners[index].run(inputs)

    def scores(self, x: np.ndarray, mode: str) -> np.ndarray:
        """(N, K) class scores for block-0 inputs ``x`` (N, H, W, C)."""
        if mode not in self.modes:
            raise ValueError(f"mode {mode!r} is not available for this export; "
                             f"available: {self.modes}")
        n = x.shape[0]
        total = np.zeros((n, self.num_classes), np.float32)
        for i, block in enumerate(self.blocks):
            scale, zp = self._score_quant(block)
            one_hot = one_hot_int8 if self.int8 else one_hot_float
            if block["contextual"]:  # one pass per candidate context (multipass only)
                for k in range(self.num_classes):
                    out = self.block_outputs(i, x, one_hot(k, self.num_classes, n))
                    if block["score_block"]:
                        total[:, k] += dequantize(out["scores"][:, k], scale, zp)
                continue  # a contextual block is the last one
            out = self.block_outputs(i, x)
            if block["score_block"]:
                total += dequantize(out["scores"], scale, zp)
            x = out["features"]
        return total

    def predict_modes(self, raw: np.ndarray, modes: list[str]) -> dict[str, np.ndarray]:
        """Predictions per mode; without contextual blocks both modes run the same
        computation, so it runs once."""
        if any(b["contextual"] for b in self.blocks) or not modes:
            return {mode: self.predict(raw, mode) for mode in modes}
        preds = self.predict(raw, modes[0])
        return dict.fromkeys(modes, preds)

    def predict(self, raw: np.ndarray, mode: str, batch_size: int = 256) -> np.ndarray:
        """Predicted labels for raw images, in batches."""
        preds = [
            self.scores(self.quantize_images(raw[i : i + batch_size]), mode).argmax(1)
            for i in range(0, len(raw), batch_size)
        ]
        return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def mode_macs(manifest: dict[str, Any], mode: str) -> int:
    """MACs of one image in ``mode``: contextual blocks run once per class in multipass."""
    k = int(manifest["dataset"]["num_classes"])
    return sum(b["macs"] * (k if b["contextual"] and mode == "multipass" else 1)
               for b in manifest["blocks"])
