"""Block-by-block training on the (simulated) device with int8 weights updated in place.

Each block starts from a seeded random init (or from the export's int8 weights), is trained
with ``qas_step`` on the int8 outputs of the blocks before it, and then requantizes its
own output to int8 (scale calibrated on the training batch it saw, zero point -128) for
the next block -- what a device that keeps only int8 activations does. Class scores of
the whole model are the goodness summed over the blocks, as in the exported pipeline.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.geometry import BlockGeometry
from ctxconv.blockgraph.ir import BlockGraph, ModelFileError
from ctxconv.blockgraph.trainable import STATE_NAMES, training_state
from ctxconv.ondevice.loading import geometry
from ctxconv.ondevice.prefix import quantize_images
from ctxconv.ondevice.qas import (
    Int8Block,
    calibrate_features,
    qas_step,
    quantize_features,
)

F32 = np.float32


def input_quant(graph: BlockGraph) -> tuple[float, int]:
    """(scale, zero point) of a block graph's int8 input."""
    t = graph.tensors["features_in"]
    if t.quant is None or t.dtype != "int8":
        raise ModelFileError(f"{graph.name}: its input is not int8; use an int8 export")
    return float(t.quant.scale[0]), int(t.quant.zero_point[0])


def block_from_graph(graph: BlockGraph, geom: BlockGeometry) -> Int8Block:
    """The export's int8 block as an in-place trainable block (its own int8 weights)."""
    s_in, zp = input_quant(graph)
    st = training_state(graph)
    return Int8Block(geom, *(st[n] for n in STATE_NAMES), s_in, zp)


def init_block(geom: BlockGeometry, in_scale: float, in_zero_point: int, seed: int
               ) -> Int8Block:
    """A seeded random init (torch's default bounds), quantized per channel: the device's
    own (``Int8Block.hash_init``, what ``ctxconv_train_reinit`` draws)."""
    return Int8Block.hash_init(geom, in_scale, in_zero_point, seed)


@dataclass
class BlockRun:
    block: Int8Block
    losses: list[float]
    train_accuracy: float
    test_accuracy: float
    seconds: float


def epoch_batches(n: int, epochs: int, batch: int, seed: int) -> np.ndarray:
    """Sample indices of every step, (epochs * (n // batch), batch): each epoch a fresh
    permutation of the n samples (seeded), cut into whole batches (the rest dropped)."""
    rng = np.random.default_rng(seed)
    per_epoch = n // batch
    out = [rng.permutation(n)[:per_epoch * batch].reshape(per_epoch, batch)
           for _ in range(epochs)]
    return np.concatenate(out) if out else np.zeros((0, batch), np.int64)


def block_accuracy(block: Int8Block, x_test: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of the block's own goodness (argmax over classes)."""
    return float((block.goodness(x_test).argmax(1) == y_test).mean()) if len(y_test) else 0.0


def train_block(block: Int8Block, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
                y_test: np.ndarray, epochs: int, batch: int, lr: float, seed: int = 0,
                rounding: str = "stochastic") -> BlockRun:
    """``epochs`` passes over (x, y) in shuffled batches; accuracy of the block's goodness."""
    order = epoch_batches(len(y), epochs, batch, seed)
    last_epoch = (epochs - 1) * (len(y) // batch)
    losses, right, seen = [], 0, 0
    t0 = time.perf_counter()
    for step, idx in enumerate(order):
        r = qas_step(block, x[idx], y[idx], lr, step, seed, rounding)
        losses.append(r.loss)
        if step >= last_epoch:
            right, seen = right + r.correct, seen + len(idx)
    seconds = time.perf_counter() - t0
    return BlockRun(block, losses, right / max(seen, 1), block_accuracy(block, x_test, y_test),
                    seconds)


def train_blocks(bundle: ExportBundle, epochs: int, batch: int, lr: float, seed: int = 0,
                 from_scratch: bool = True, rounding: str = "stochastic",
                 blocks: int | None = None) -> dict[str, Any]:
    """Train the export's blocks one after another in the simulator; returns the report.

    ``from_scratch``: random init (else the export's int8 weights); the export supplies the
    architecture, the input quantization and the training / test vectors.
    """
    raw, y = bundle.train_vectors()
    raw_t, y_t = bundle.test_vectors()
    y, y_t = y.astype(np.int64), y_t.astype(np.int64)
    x, x_t = quantize_images(bundle, raw), quantize_images(bundle, raw_t)
    if x.dtype != np.int8:
        raise ModelFileError(f"{bundle.path} is a float export; training in place needs int8")
    s_in, zp = input_quant(bundle.graphs[0])
    n = len(bundle.graphs) if blocks is None else blocks
    total = np.zeros((len(y_t), bundle.num_classes), F32)
    out: list[dict[str, Any]] = []
    for i in range(n):
        geom = geometry(bundle, i)
        block = (init_block(geom, s_in, zp, seed + i) if from_scratch
                 else block_from_graph(bundle.graphs[i], geom))
        if not from_scratch:
            block.in_scale, block.in_zero_point = input_quant(bundle.graphs[i])
        run = train_block(block, x, y, x_t, y_t, epochs, batch, lr, seed + i, rounding)
        total += block.goodness(x_t)
        steps = len(run.losses)
        w = max(1, steps // 10)
        out.append({"block": i, "steps": steps, "epochs": epochs, "batch": batch,
                    "first_loss": float(np.mean(run.losses[:w])),
                    "last_loss": float(np.mean(run.losses[-w:])),
                    "train_accuracy_last_epoch": run.train_accuracy,
                    "test_accuracy_block": run.test_accuracy,
                    "test_accuracy_summed": float((total.argmax(1) == y_t).mean()),
                    "rescaled_rows": block.rescales, "host_seconds": run.seconds,
                    "int8_params": block.int8_params})
        if i + 1 < n:  # int8 outputs for the next block, scale from the training data
            h = block.features(x)
            s_out = calibrate_features(h)
            x, x_t = quantize_features(h, s_out), quantize_features(block.features(x_t), s_out)
            s_in, zp = s_out, -128
    return {"from_scratch": from_scratch, "lr": lr, "seed": seed, "rounding": rounding,
            "train_images": int(len(y)), "test_images": int(len(y_t)), "blocks": out,
            "test_accuracy": out[-1]["test_accuracy_summed"] if out else 0.0}
