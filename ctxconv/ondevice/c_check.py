"""Training one block in C (``harness/ctxconv_train.c``), built and run for this machine and
under QEMU for the MCU's core, against the numpy model of the same step (``ondevice/qas``).

The frozen blocks before the trained one run through the export's generated library; the
harness gets the batches of the export's training vectors in step order and writes back
the loss of every step and the final int8 weights, scales and biases. The report gives
how far they are from the simulator's (int8 weights: bit-exact expected; float32 state
and loss: relative error), the test accuracy of the block the C returned beside the
simulator's (the same numpy int8 evaluation, ``scratch.block_accuracy``), and what was
measured on the binary (RAM, instructions per step and in all, the device time they
give at the profile's clock) beside the planner's estimates (``ondevice/inplace``).

``epochs``: train whole epochs in C, the batches shuffled exactly as the simulator's
block-by-block training shuffles them (``scratch.epoch_batches``), so block 0 trained
from scratch in C ends where ``train_blocks`` ends for block 0 with the same seed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.geometry import BlockGeometry
from ctxconv.codegen import TRAIN_FILES, copy_runtime
from ctxconv.ondevice.accounting import ExportModel
from ctxconv.ondevice.inplace import inplace_report
from ctxconv.ondevice.loading import geometries, geometry
from ctxconv.ondevice.prefix import FrozenPrefix
from ctxconv.ondevice.qas import ROUNDINGS, Int8Block, qas_step
from ctxconv.ondevice.scratch import (
    block_accuracy,
    block_from_graph,
    epoch_batches,
    init_block,
    input_quant,
)
from ctxconv.runtimes.firmware.build import (
    TRAIN_FLAGS,
    TRAIN_HARNESS,
    build_arm,
    build_host,
)
from ctxconv.runtimes.firmware.run import CALIBRATION_INSTRUCTIONS, run_program
from ctxconv.runtimes.firmware.targets import FirmwareError, target_for
from ctxconv.sim.firmware_check import c_dir_of
from ctxconv.sim.profiles import McuProfile
from ctxconv.workdirs import work_directory

log = logging.getLogger(__name__)
F32 = np.float32
STATE = ("conv_q", "conv_s", "conv_b", "head_q", "head_s", "head_b")
HOST_SECONDS, EMULATED_SECONDS_PER_STEP = 60.0, 60.0
TRAIN_SYMBOL_PREFIX = "ctxconv_train_"


def train_defines(geom: BlockGeometry, batch: int) -> tuple[str, ...]:
    """Compiler flags that size ``ctxconv_train.c`` for the block."""
    vals = {"IN_SIZE": geom.in_size, "IN_CHANNELS": geom.in_channels, "POOL": geom.pool,
            "KERNEL": geom.kernel, "FILTERS": geom.filters, "CLASSES": geom.num_classes,
            "GRID": geom.head_grid, "BATCH": batch}
    return (*TRAIN_FLAGS, *(f"-DCTXCONV_TRAIN_{k}={v}" for k, v in vals.items()))


def _state_arrays(block: Int8Block) -> list[np.ndarray]:
    return [getattr(block, n) for n in STATE]


def encode_train_inputs(block: Int8Block, index: int, raw: np.ndarray, labels: np.ndarray,
                        lr: float, seed: int, rounding: str) -> bytes:
    """The training harness's input file; raw (steps, B, H, W, C) uint8, labels (steps, B)."""
    steps, batch = labels.shape
    head = np.array([steps, batch, index, seed, rounding == "stochastic",
                     block.in_zero_point], "<i4").tobytes()
    head += np.array([lr, block.in_scale], "<f4").tobytes()
    head += b"".join(np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
                     for a in _state_arrays(block))
    body = b"".join(np.ascontiguousarray(raw[s], np.uint8).tobytes()
                    + np.ascontiguousarray(labels[s], np.uint8).tobytes()
                    for s in range(steps))
    return head + body


def decode_train_outputs(data: bytes, steps: int, like: Int8Block) -> dict[str, Any]:
    """Parse the training harness's output file (layout in train_harness.c)."""
    rec = np.dtype([("loss", "<f4"), ("correct", "<i4"), ("rescaled", "<i4"),
                    ("prefix", "<u8"), ("step", "<u8")])
    sizes = [a.nbytes for a in _state_arrays(like)]
    want = rec.itemsize * steps + sum(sizes) + 12
    if len(data) != want:
        raise FirmwareError(f"training harness output has {len(data)} bytes, expected {want}")
    r = np.frombuffer(data[: rec.itemsize * steps], rec)
    out: dict[str, Any] = {k: r[k].copy() for k in rec.names}
    off = rec.itemsize * steps
    state = {}
    for name, a, n in zip(STATE, _state_arrays(like), sizes, strict=True):
        state[name] = np.frombuffer(data[off:off + n], a.dtype).reshape(a.shape).copy()
        off += n
    cal, stack = np.frombuffer(data[off:], np.dtype([("c", "<u8"), ("s", "<u4")]))[0]
    out.update(state=state, calibration_ticks=int(cal), stack_used=int(stack))
    return out


def block_from_state(state: dict[str, np.ndarray], like: Int8Block) -> Int8Block:
    """The block whose int8 weights, scales and biases the C returned."""
    return Int8Block(like.geom, *(state[n] for n in STATE), like.in_scale, like.in_zero_point)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b) / np.maximum(np.abs(b), 1e-30)).max()) if a.size else 0.0


def compare_training(got: dict[str, Any], block: Int8Block, losses: list[float],
                     correct: list[int]) -> dict[str, Any]:
    """C results vs the simulator's: int8 weights exact, float state and loss relative."""
    st = got["state"]
    int8 = {}
    for name in ("conv_q", "head_q"):
        a, b = st[name].astype(np.int32), getattr(block, name).astype(np.int32)
        int8[name] = {"equal_fraction": float((a == b).mean()),
                      "max_abs_diff": int(np.abs(a - b).max())}
    floats = {n: _rel(st[n], getattr(block, n)) for n in ("conv_s", "conv_b", "head_s",
                                                           "head_b")}
    loss_rel = _rel(got["loss"], np.asarray(losses, F32))
    exact = all(v["max_abs_diff"] == 0 for v in int8.values())
    return {"int8_weights": int8, "int8_bit_exact": exact,
            "float_state_max_rel_error": floats, "loss_max_rel_error": loss_rel,
            "correct_equal": bool(np.array_equal(got["correct"], np.asarray(correct))),
            "max_rel_error": max([loss_rel, *floats.values()])}


def _learned(got: dict[str, Any], like: Int8Block, x_test: np.ndarray, y_test: np.ndarray,
             sim_accuracy: float) -> dict[str, Any]:
    """Test accuracy of the C-trained block (numpy int8 evaluation) beside the simulator's."""
    acc = block_accuracy(block_from_state(got["state"], like), x_test, y_test)
    return {"test_accuracy": acc, "test_accuracy_equal": acc == sim_accuracy,
            **_loss_window(got["loss"])}


def _loss_window(losses: Any) -> dict[str, Any]:
    """Mean loss over the first and the last tenth of the steps (single steps are noisy)."""
    a = np.asarray(losses, np.float64)
    w = max(1, len(a) // 10)
    return {"loss_window": w, "first_loss": float(a[:w].mean()), "last_loss": float(a[-w:].mean())}


def _measured(build: Any, got: dict[str, Any], report: dict[str, Any], batch: int,
              profile: McuProfile) -> dict[str, Any]:
    """RAM and instructions per step measured on the binary, beside the planner's figures."""
    if got["calibration_ticks"] <= 0:
        raise FirmwareError("the emulated run has no instruction counter")
    per_tick = CALIBRATION_INSTRUCTIONS / got["calibration_ticks"]
    train_ram = build.library_bytes(TRAIN_SYMBOL_PREFIX, kinds="bBdD")
    static = {n: s for n, (k, s) in build.library_symbols.items() if k in "bBdD"}
    lib_ram = build.library_bytes(kinds="bBdD")
    step_instr = float(np.median(got["step"])) * per_tick
    prefix_instr = float(np.median(got["prefix"])) * per_tick / batch
    modelled_cycles = report["ms_per_step"] * 1e-3 * profile.clock_hz
    total = float(got["step"].sum() + got["prefix"].sum()) * per_tick
    return {
        "target": build.target.label, "flash_bytes": build.flash_bytes,
        "static_ram_bytes": lib_ram, "training_state_ram_bytes": train_ram,
        "static_symbols": dict(sorted(static.items(), key=lambda kv: -kv[1])[:12]),
        "stack_high_water_bytes": got["stack_used"],
        "ram_bytes": lib_ram + got["stack_used"],
        "modelled_sram_bytes": report["sram_bytes"],
        "modelled_sram_sum_bytes": report["sram_sum_bytes"],
        "instructions_per_step": round(step_instr),
        "prefix_instructions_per_image": round(prefix_instr),
        "modelled_cycles_per_step": round(modelled_cycles),
        "instructions_total": round(total),
        "clock_hz": profile.clock_hz,
        # every instruction takes at least one cycle: a lower bound on the device time
        "device_seconds_lower_bound": total / profile.clock_hz,
        "instructions_over_modelled_cycles": round(
            (step_instr + batch * prefix_instr) / modelled_cycles, 4),
        "macs": report["macs"],
    }  # fmt: skip


def simulate(block: Int8Block, x: np.ndarray, labels: np.ndarray, lr: float, seed: int,
             rounding: str) -> tuple[list[float], list[int]]:
    """The numpy model of the same steps; x (steps, B, ...) int8, labels (steps, B)."""
    losses, correct = [], []
    for s in range(len(labels)):
        r = qas_step(block, x[s], labels[s], lr, s, seed, rounding)
        losses.append(r.loss)
        correct.append(r.correct)
    return losses, correct


def initial_block(bundle: ExportBundle, index: int, from_scratch: bool, seed: int
                  ) -> Int8Block:
    geom = geometry(bundle, index)
    if from_scratch:
        s_in, zp = input_quant(bundle.graphs[index])
        return init_block(geom, s_in, zp, seed + index)
    return block_from_graph(bundle.graphs[index], geom)


def check_training(bundle: ExportBundle, index: int, profile: McuProfile, steps: int = 3,
                   batch: int = 4, lr: float = 0.05, seed: int = 0,
                   rounding: str = "stochastic", from_scratch: bool = False,
                   emulate: bool = True, work_dir: Path | None = None,
                   epochs: int | None = None) -> dict[str, Any]:
    """Train block ``index`` in C (host; and emulated when ``emulate`` and the core has a
    target) and in numpy; compare, evaluate on the test vectors and measure.

    ``steps`` batches taken in order from the training vectors, or, with ``epochs``,
    ``epochs`` shuffled passes over them (``steps`` is then ignored)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; choose one of {ROUNDINGS}")
    if not 0 <= index < len(bundle.graphs):
        raise ValueError(f"block {index} does not exist (the export has "
                         f"{len(bundle.graphs)} blocks)")
    if steps < 1 or batch < 1 or (epochs is not None and epochs < 1):
        raise ValueError("steps, batch and epochs must be >= 1")
    c_dir = c_dir_of(bundle)
    block0 = initial_block(bundle, index, from_scratch, seed)
    geom = block0.geom
    raw, labels = bundle.train_vectors()
    if epochs is not None:
        if len(labels) < batch:
            raise ValueError(f"batch {batch} is larger than the {len(labels)} training vectors")
        idx = epoch_batches(len(labels), epochs, batch, seed)
        steps = len(idx)
    else:
        idx = (np.arange(steps * batch) % len(labels)).reshape(steps, batch)
    raw_b, y_b = raw[idx], labels[idx].astype(np.int64)
    prefix = FrozenPrefix(bundle, index)
    x = prefix.quantized(raw[idx.reshape(-1)])
    x = x.reshape(steps, batch, *x.shape[1:])
    raw_t, y_t = bundle.test_vectors()
    x_t, y_t = prefix.quantized(raw_t), y_t.astype(np.int64)
    sim = block0.copy()
    losses, correct = simulate(sim, x, y_b, lr, seed, rounding)
    sim_accuracy = block_accuracy(sim, x_t, y_t)
    inputs = encode_train_inputs(block0, index, raw_b, y_b, lr, seed, rounding)
    defines = train_defines(geom, batch)
    model = ExportModel(geometries(bundle), bundle.graphs, [len(t) for t in bundle.tflite],
                        bundle.tflite)
    planned = inplace_report(model, index, profile, batch, "ram")
    planned_seconds = steps * planned["ms_per_step"] / 1e3
    report: dict[str, Any] = {
        "block": index, "steps": steps, "batch": batch, "lr": lr, "rounding": rounding,
        "from_scratch": from_scratch, "int8_params": block0.int8_params,
        "epochs": epochs, "train_images": int(len(labels)), "test_images": int(len(y_t)),
        "test_accuracy_initial": block_accuracy(block0, x_t, y_t),
        "simulator": {"losses": losses, "correct": correct, "test_accuracy": sim_accuracy,
                      **_loss_window(losses)},
        "tolerance": "int8 weights bit-exact; float32 scales, biases and loss: max relative "
                     "error <= 1e-5",
        "planned": {k: planned[k] for k in ("sram_bytes", "sram_sum_bytes", "ms_per_step",
                                            "macs", "store")},
        "planned_device_seconds": planned_seconds,
    }  # fmt: skip
    with work_directory("ctxconv-train-", work_dir) as work:
        log.info("host build of the training step for block %d", index)
        extra = tuple(p for p in copy_runtime(TRAIN_FILES, work) if p.suffix == ".c")
        exe = build_host(c_dir, work, [], TRAIN_HARNESS, defines, extra)
        got = decode_train_outputs(run_program(exe, inputs, work, HOST_SECONDS + steps),
                                   steps, block0)
        report["host"] = compare_training(got, sim, losses, correct)
        report["host"]["losses"] = got["loss"].tolist()
        report["host"].update(_learned(got, block0, x_t, y_t, sim_accuracy))
        report["emulated"] = None
        if emulate:
            try:
                target = target_for(profile)
            except FirmwareError as exc:
                report["emulated_skipped"] = str(exc)
                return report
            log.info("Cortex-M build of the training step (%s) under QEMU", target.core)
            arm = work / "arm"
            arm.mkdir()
            build = build_arm(c_dir, arm, [], target, profile, harness=TRAIN_HARNESS,
                              defines=defines, extra=extra)
            data = run_program(build.elf, inputs, arm,
                               HOST_SECONDS + EMULATED_SECONDS_PER_STEP * steps, target)
            got = decode_train_outputs(data, steps, block0)
            rep = compare_training(got, sim, losses, correct)
            rep["losses"] = got["loss"].tolist()
            rep.update(_learned(got, block0, x_t, y_t, sim_accuracy))
            rep.update(_measured(build, got, planned, batch, profile))
            report["emulated"] = rep
    return report
