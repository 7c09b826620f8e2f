"""The exported C library learning (``c/ctxconv_train.{h,c}``), built for this machine and
for the MCU's core under QEMU, against the numpy model of the same steps (``ondevice/qas``).

A harness drives the library's public training API: for each trained block in order it
configures the block (update set, learning rate, batch, seed; optionally a fresh init),
feeds the labelled training vectors one at a time (a step runs when a batch is full) and
writes back every step's loss and the block's int8 weights, float32 scales and biases and
the inference parameters the library recomputed; then it classifies test vectors with
``ctxconv_classify``: the library infers with the weights it learned, no re-export. The
simulator runs the same steps on the same int8 inputs: the frozen blocks before a trained
block run with the reference kernels on the graphs as the device holds them by then
(``trainable.with_state``), so training every block in sequence stays comparable.

The report gives, per block, how far the C is from the simulator (int8 weights and the
inference parameters: bit-exact expected; float32 state and loss: relative error), the
test accuracy of the block the C returned beside the simulator's, and what was measured on
the binary (RAM, flash, instructions per step) beside the planner's estimates; for the
whole run, the class scores of ``ctxconv_classify`` against the reference kernels on the
trained graphs, and the int8 pipeline's test accuracy with the C's weights.

``epochs``: whole epochs in C, the batches shuffled exactly as the simulator's
block-by-block training shuffles them (``scratch.epoch_batches``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.geometry import BlockGeometry
from ctxconv.blockgraph.ir import BlockGraph, ModelFileError
from ctxconv.blockgraph.pipeline import BlockPipeline
from ctxconv.blockgraph.trainable import STATE_NAMES, with_state
from ctxconv.codegen.training import train_reasons
from ctxconv.ondevice.accounting import ExportModel
from ctxconv.ondevice.inplace import inplace_report
from ctxconv.ondevice.loading import geometries, geometry
from ctxconv.ondevice.prefix import FrozenPrefix, quantize_images
from ctxconv.ondevice.qas import INT8_UPDATES, ROUNDINGS, Int8Block, qas_step
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
    FirmwareDoesNotFit,
    build_arm,
    build_host,
)
from ctxconv.runtimes.firmware.run import CALIBRATION_INSTRUCTIONS, run_program
from ctxconv.runtimes.firmware.targets import FirmwareError, target_for
from ctxconv.runtimes.reference import compile_graph
from ctxconv.sim.firmware_check import c_dir_of
from ctxconv.sim.profiles import McuProfile
from ctxconv.workdirs import work_directory

log = logging.getLogger(__name__)
F32 = np.float32
STATE = STATE_NAMES
PARAMS = ("conv_bias", "conv_mult", "conv_shift", "head_bias", "head_mult", "head_shift")
UPDATE_CODES = {u: i for i, u in enumerate(INT8_UPDATES)}  # CTXCONV_UPDATE_*
HOST_SECONDS, EMULATED_SECONDS_PER_STEP = 60.0, 60.0
TRAIN_SOURCE = "ctxconv_train.c"
#: The step's static buffers in ctxconv_train.c (their symbols in the ELF).
TRAIN_BUFFER_SYMBOLS = ("inputs", "masks", "z", "ds", "gw", "row", "cdz", "labels")
_STEP = np.dtype([("loss", "<f4"), ("correct", "<u4"), ("rescaled", "<u4"),
                  ("prefix", "<u8"), ("step", "<u8")])


def train_defines(blocks: Sequence[int], batch: int) -> tuple[str, ...]:
    """Compiler flags that build the library's training for ``blocks`` at ``batch``."""
    mask = sum(1 << b for b in set(blocks))
    return (*TRAIN_FLAGS, f"-DCTXCONV_TRAIN_BLOCKS=0x{mask:x}u",
            f"-DCTXCONV_TRAIN_MAX_BATCH={batch}")


def _state_arrays(block: Int8Block) -> list[np.ndarray]:
    return [getattr(block, n) for n in STATE]


def _le(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()


def block_header(index: int, update: str, batch: int, rounding: str, reinit: bool,
                 steps: int, seed: int, init_seed: int, lr: float) -> bytes:
    """One trained block's record in the harness's input file (train_harness.c)."""
    return (np.array([index, UPDATE_CODES[update], batch, rounding == "stochastic", reinit,
                      steps], "<i4").tobytes()
            + np.array([seed, init_seed], "<u4").tobytes() + np.array([lr], "<f4").tobytes())


def samples(raw: np.ndarray, labels: np.ndarray) -> bytes:
    """Labelled raw images in feed order: pixels then the uint8 label, per image."""
    out = [np.ascontiguousarray(r, np.uint8).tobytes() + bytes([int(y)])
           for r, y in zip(raw, labels, strict=True)]
    return b"".join(out)


def decode_block(data: bytes, off: int, steps: int, like: Int8Block
                 ) -> tuple[dict[str, Any], int]:
    """One trained block's records from the harness's output at ``off``; returns the new
    offset."""
    n = _STEP.itemsize * steps
    if len(data) < off + n:
        raise FirmwareError("training harness output is shorter than its step records")
    r = np.frombuffer(data[off:off + n], _STEP)
    out: dict[str, Any] = {k: r[k].copy() for k in _STEP.names}
    off += n
    state: dict[str, np.ndarray] = {}
    for name, a in zip(STATE, _state_arrays(like), strict=True):
        state[name], off = _take(data, off, a.dtype, a.shape)
    params: dict[str, np.ndarray] = {}
    for name in PARAMS:
        count = like.geom.filters if name.startswith("conv") else like.geom.num_classes
        params[name], off = _take(data, off, np.dtype("<i4"), (count,))
    out.update(state=state, params=params)
    return out, off


def _take(data: bytes, off: int, dtype: np.dtype, shape: tuple[int, ...]
          ) -> tuple[np.ndarray, int]:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(data) < off + n:
        raise FirmwareError("training harness output is shorter than its state records")
    return np.frombuffer(data[off:off + n], dtype).reshape(shape).copy(), off + n


def block_from_state(state: dict[str, np.ndarray], like: Int8Block) -> Int8Block:
    """The block whose int8 weights, scales and biases the C returned."""
    return Int8Block(like.geom, *(state[n] for n in STATE), like.in_scale, like.in_zero_point)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float((np.abs(a - b) / np.maximum(np.abs(b), 1e-30)).max()) if a.size else 0.0


def expected_params(graph: BlockGraph) -> dict[str, np.ndarray]:
    """The inference parameters the reference kernels use for a trained block's graph."""
    from ctxconv.blockgraph import ops

    out = {}
    for op in graph.ops:
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            p = ops.REGISTRY[op.kind].prepare(graph, op)
            part = "conv" if op.kind == "CONV_2D" else "head"
            out.update({f"{part}_{k}": np.asarray(getattr(p, k), np.int64)
                        for k in ("bias", "mult", "shift")})
    return out


def compare_training(got: dict[str, Any], block: Int8Block, losses: list[float],
                     correct: list[int], graph: BlockGraph) -> dict[str, Any]:
    """C results vs the simulator's: int8 weights and inference parameters exact, float
    state and loss relative."""
    st = got["state"]
    int8 = {}
    for name in ("conv_q", "head_q"):
        a, b = st[name].astype(np.int32), getattr(block, name).astype(np.int32)
        int8[name] = {"equal_fraction": float((a == b).mean()),
                      "max_abs_diff": int(np.abs(a - b).max())}
    want = expected_params(graph)
    params_equal = {k: bool(np.array_equal(got["params"][k].astype(np.int64), want[k]))
                    for k in PARAMS}
    floats = {n: _rel(st[n], getattr(block, n)) for n in ("conv_s", "conv_b", "head_s",
                                                           "head_b")}
    loss_rel = _rel(got["loss"], np.asarray(losses, F32))
    exact = all(v["max_abs_diff"] == 0 for v in int8.values())
    return {"int8_weights": int8, "int8_bit_exact": exact,
            "inference_params_equal": params_equal,
            "inference_params_bit_exact": all(params_equal.values()),
            "float_state_max_rel_error": floats, "loss_max_rel_error": loss_rel,
            "correct_equal": bool(np.array_equal(got["correct"], np.asarray(correct))),
            "max_rel_error": max([loss_rel, *floats.values()])}


def _loss_window(losses: Any) -> dict[str, Any]:
    """Mean loss over the first and the last tenth of the steps (single steps are noisy)."""
    a = np.asarray(losses, np.float64)
    w = max(1, len(a) // 10)
    return {"loss_window": w, "first_loss": float(a[:w].mean()), "last_loss": float(a[-w:].mean())}


def simulate(block: Int8Block, x: np.ndarray, labels: np.ndarray, lr: float, seed: int,
             rounding: str, update: str = "all") -> tuple[list[float], list[int]]:
    """The numpy model of the same steps; x (steps, B, ...) int8, labels (steps, B)."""
    losses, correct = [], []
    for s in range(len(labels)):
        r = qas_step(block, x[s], labels[s], lr, s, seed, rounding, update)
        losses.append(r.loss)
        correct.append(r.correct)
    return losses, correct


def initial_block(graph: BlockGraph, geom: BlockGeometry, from_scratch: bool, seed: int
                  ) -> Int8Block:
    """A block as training starts: the device's own init (``from_scratch``) or the weights
    the device holds (``graph``)."""
    if from_scratch:
        return init_block(geom, *input_quant(graph), seed)
    return block_from_graph(graph, geom)


def _measured(got: dict[str, Any], planned: dict[str, Any], batch: int, profile: McuProfile,
              per_tick: float) -> dict[str, Any]:
    """Instructions per step measured on the binary, beside the planner's figures."""
    step_instr = float(np.median(got["step"])) * per_tick
    prefix_instr = float(np.median(got["prefix"])) * per_tick / batch
    modelled_cycles = planned["ms_per_step"] * 1e-3 * profile.clock_hz
    total = float(got["step"].sum() + got["prefix"].sum()) * per_tick
    return {
        "modelled_sram_bytes": planned["sram_bytes"],
        "modelled_sram_sum_bytes": planned["sram_sum_bytes"],
        "instructions_per_step": round(step_instr),
        "instructions_per_sample": round(step_instr / batch),
        "prefix_instructions_per_image": round(prefix_instr),
        "modelled_cycles_per_step": round(modelled_cycles),
        "instructions_total": round(total),
        "clock_hz": profile.clock_hz,
        # every instruction takes at least one cycle: a lower bound on the device time
        "device_seconds_lower_bound": total / profile.clock_hz,
        "instructions_over_modelled_cycles": round(
            (step_instr + batch * prefix_instr) / modelled_cycles, 4),
    }  # fmt: skip


def _build_measured(build: Any, stack: int) -> dict[str, Any]:
    """RAM and flash of the training build, measured on the ELF and the painted stack."""
    static = {n: s for n, (k, s) in build.library_symbols.items() if k in "bBdD"}
    lib_ram = build.library_bytes(kinds="bBdD")
    return {"target": build.target.label, "flash_bytes": build.flash_bytes,
            "static_ram_bytes": lib_ram,
            "training_buffers_ram_bytes": sum(static.get(n, 0) for n in TRAIN_BUFFER_SYMBOLS),
            "static_symbols": dict(sorted(static.items(), key=lambda kv: -kv[1])[:12]),
            "stack_high_water_bytes": stack, "ram_bytes": lib_ram + stack}


def _choose_blocks(bundle: ExportBundle, blocks: int | Sequence[int] | str) -> list[int]:
    n = len(bundle.graphs)
    reasons = train_reasons(bundle.manifest, bundle.graphs)
    if blocks == "all":
        chosen = [i for i, r in enumerate(reasons) if r is None]
        if not chosen:
            raise ValueError("no block of this export can be trained in C: " + "; ".join(
                f"block {i}: {r}" for i, r in enumerate(reasons)))
        return chosen
    chosen = [int(blocks)] if isinstance(blocks, int | np.integer) else [int(b) for b in blocks]
    for i in chosen:
        if not 0 <= i < n:
            raise ValueError(f"block {i} does not exist (the export has {n} blocks)")
        if reasons[i] is not None:
            raise ValueError(f"block {i} cannot be trained in C: {reasons[i]}")
    if chosen != sorted(set(chosen)):
        raise ValueError(f"blocks {chosen}: train each block once, in increasing order")
    return chosen


def simulate_blocks(bundle: ExportBundle, chosen: list[int], profile: McuProfile,
                    raw: np.ndarray, labels: np.ndarray, test: tuple[np.ndarray, np.ndarray],
                    steps: int, batch: int, lr: float, seed: int, rounding: str,
                    from_scratch: bool, epochs: int | None, update: str
                    ) -> tuple[list[dict[str, Any]], list[BlockGraph]]:
    """The simulator's side of ``check_training``: each chosen block trained in turn on
    (raw, labels) as the device trains it; returns per block its record (with the
    harness's input under ``_input``) and the block graphs as the device holds them after."""
    raw_t, y_t = test
    model = ExportModel(geometries(bundle), bundle.graphs, [len(t) for t in bundle.tflite],
                        bundle.tflite)
    graphs = list(bundle.graphs)
    runs: list[dict[str, Any]] = []
    for i in chosen:
        block0 = initial_block(graphs[i], geometry(bundle, i), from_scratch, seed + i)
        if epochs is not None:
            idx = epoch_batches(len(labels), epochs, batch, seed + i)
        else:
            idx = (np.arange(steps * batch) % len(labels)).reshape(steps, batch)
        n_steps = len(idx)
        prefix = FrozenPrefix(bundle, i, graphs)
        x = prefix.quantized(raw[idx.reshape(-1)])
        x = x.reshape(n_steps, batch, *x.shape[1:])
        x_t = prefix.quantized(raw_t)
        y_b = labels[idx].astype(np.int64)
        sim = block0.copy()
        losses, correct = simulate(sim, x, y_b, lr, seed + i, rounding, update)
        parts = ("conv", "head") if from_scratch or update != "head" else ("head",)
        graphs[i] = with_state(graphs[i], {n: getattr(sim, n) for n in STATE}, parts)
        planned = inplace_report(model, i, profile, batch, "ram")
        runs.append({
            "block": i, "steps": n_steps, "batch": batch, "lr": lr, "rounding": rounding,
            "update": update, "from_scratch": from_scratch, "epochs": epochs,
            "int8_params": block0.int8_params, "train_images": int(len(labels)),
            "test_images": int(len(y_t)),
            "test_accuracy_initial": block_accuracy(block0, x_t, y_t),
            "simulator": {"losses": losses, "correct": correct,
                          "test_accuracy": block_accuracy(sim, x_t, y_t), **_loss_window(losses)},
            "planned": {k: planned[k] for k in ("sram_bytes", "sram_sum_bytes", "ms_per_step",
                                                "macs", "store")},
            "planned_device_seconds": n_steps * planned["ms_per_step"] / 1e3,
            "_like": block0, "_sim": sim, "_x_t": x_t, "_parts": parts,
            "_input": block_header(i, update, batch, rounding, from_scratch, n_steps, seed + i,
                                   seed + i, lr)
                      + samples(raw[idx.reshape(-1)], labels[idx.reshape(-1)]),
        })  # fmt: skip
    return runs, graphs


def reference_pipeline(bundle: ExportBundle, graphs: list[BlockGraph]) -> BlockPipeline:
    """The export's block pipeline over ``graphs``, run by the reference kernels."""
    return BlockPipeline(bundle.manifest, [compile_graph(g) for g in graphs])


def pipeline_accuracy(pipe: BlockPipeline, raw: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of a pipeline in its default mode on raw images."""
    if not len(labels):
        return 0.0
    return float((pipe.predict(raw, pipe.modes[0]) == labels).mean())


def check_training(bundle: ExportBundle, blocks: int | Sequence[int] | str,
                   profile: McuProfile, steps: int = 3, batch: int = 4, lr: float = 0.05,
                   seed: int = 0, rounding: str = "stochastic", from_scratch: bool = False,
                   emulate: bool = True, work_dir: Path | None = None,
                   epochs: int | None = None, update: str = "all", eval_images: int = 8,
                   use_feed: bool = False) -> dict[str, Any]:
    """Train ``blocks`` (an index, indices in increasing order, or ``"all"`` trainable
    blocks) one after another in the exported C library (host; and emulated when
    ``emulate`` and the core has a target) and in numpy; compare, evaluate and measure.

    Each block: ``steps`` batches taken in order from the training vectors, or, with
    ``epochs``, ``epochs`` shuffled passes over them (``steps`` is then ignored).
    ``use_feed``: the harness feeds raw images through ``ctxconv_train_feed``; else it
    runs the frozen blocks itself and feeds the block's input (the two timed apart)."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"unknown rounding {rounding!r}; choose one of {ROUNDINGS}")
    if update not in INT8_UPDATES:
        raise ValueError(f"unknown update set {update!r}; choose one of {INT8_UPDATES}")
    chosen = _choose_blocks(bundle, blocks)
    if steps < 1 or batch < 1 or (epochs is not None and epochs < 1) or eval_images < 0:
        raise ValueError("steps, batch and epochs must be >= 1, eval_images >= 0")
    c_dir = c_dir_of(bundle)
    if not (c_dir / TRAIN_SOURCE).is_file():
        raise ModelFileError(f"{c_dir} has no {TRAIN_SOURCE} (written by an earlier "
                             "ctxconv-export); regenerate it: ctxconv-export EXPORT_DIR "
                             "--format c")
    raw, labels = bundle.train_vectors()
    if epochs is not None and len(labels) < batch:
        raise ValueError(f"batch {batch} is larger than the {len(labels)} training vectors")
    defines = train_defines(chosen, batch)
    extra = (c_dir / TRAIN_SOURCE,)
    with work_directory("ctxconv-train-", work_dir) as work:
        # the builds first: a library that does not fit the MCU fails in seconds
        log.info("host build of the library's training for blocks %s", chosen)
        exe = build_host(c_dir, work, [], TRAIN_HARNESS, defines, extra)
        build, target, skipped = None, None, None
        if emulate:
            try:
                target = target_for(profile)
            except FirmwareError as exc:
                skipped = str(exc)
        if target is not None:
            arm = work / "arm"
            arm.mkdir()
            try:
                build = build_arm(c_dir, arm, [], target, profile, harness=TRAIN_HARNESS,
                                  defines=defines, extra=extra)
            except FirmwareDoesNotFit as exc:
                raise FirmwareDoesNotFit(
                    f"{exc}: blocks {chosen} learning at batch {batch} do not fit "
                    f"{profile.name}; train fewer blocks (--firmware-block I), a smaller "
                    "batch, or pick an MCU with more memory", exc.overflows) from None
        report = _run_checks(bundle, chosen, profile, raw, labels, steps, batch, lr, seed,
                             rounding, from_scratch, epochs, update, eval_images, use_feed,
                             work, exe, build)
        if skipped is not None:
            report["emulated_skipped"] = skipped
    return report


def _run_checks(bundle: ExportBundle, chosen: list[int], profile: McuProfile,
                raw: np.ndarray, labels: np.ndarray, steps: int, batch: int, lr: float,
                seed: int, rounding: str, from_scratch: bool, epochs: int | None,
                update: str, eval_images: int, use_feed: bool, work: Path, exe: Path,
                build: Any) -> dict[str, Any]:
    """The simulator's steps, then the built harnesses run on the same samples."""
    raw_t, y_t = bundle.test_vectors()
    y_t = y_t.astype(np.int64)
    runs, graphs = simulate_blocks(bundle, chosen, profile, raw, labels, (raw_t, y_t), steps,
                                   batch, lr, seed, rounding, from_scratch, epochs, update)
    inputs = np.array([len(chosen), min(eval_images, len(y_t)), int(use_feed)],
                      "<i4").tobytes()
    for run in runs:
        inputs += run.pop("_input")
    n_eval = min(eval_images, len(y_t))
    inputs += b"".join(np.ascontiguousarray(r, np.uint8).tobytes() for r in raw_t[:n_eval])
    pipe = reference_pipeline(bundle, graphs)
    want_scores = pipe.score_sums(quantize_images(bundle, raw_t[:n_eval]), pipe.modes[0])
    report: dict[str, Any] = {
        "blocks": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
        "update": update, "from_scratch": from_scratch, "eval_images": n_eval,
        "feed": "ctxconv_train_feed" if use_feed else "ctxconv_train_feed_input",
        "simulator_pipeline_test_accuracy": pipeline_accuracy(pipe, raw_t, y_t),
        "tolerance": "int8 weights and inference parameters bit-exact; float32 scales, "
                     "biases and loss: max relative error <= 1e-5; class scores bit-exact",
    }
    total_steps = sum(r["steps"] for r in runs)
    data = run_program(exe, inputs, work, HOST_SECONDS + total_steps)
    report["host"] = _outcome(data, runs, report, bundle, graphs, want_scores, (raw_t, y_t),
                              "host")
    report["emulated"] = None
    if build is not None:
        log.info("the library's training on %s under QEMU", build.target.label)
        data = run_program(build.elf, inputs, build.elf.parent,
                           HOST_SECONDS + EMULATED_SECONDS_PER_STEP * total_steps, build.target)
        report["emulated"] = _outcome(data, runs, report, bundle, graphs, want_scores,
                                      (raw_t, y_t), "emulated", (build, profile))
    return report


def _outcome(data: bytes, runs: list[dict[str, Any]], report: dict[str, Any],
             bundle: ExportBundle, graphs: list[BlockGraph], want_scores: np.ndarray,
             test: tuple[np.ndarray, np.ndarray], where: str,
             arm: tuple[Any, McuProfile] | None = None) -> dict[str, Any]:
    """Parse one run's output: per block into ``report['blocks'][i][where]``; returns the
    run's summary (scores, pipeline accuracy on the ``test`` vectors, exactness, and what
    the build measured)."""
    off = 0
    blocks_got = []
    for run, rep in zip(runs, report["blocks"], strict=True):
        got, off = decode_block(data, off, run["steps"], run["_like"])
        blocks_got.append(got)
        res = compare_training(got, run["_sim"], rep["simulator"]["losses"],
                               rep["simulator"]["correct"], graphs[rep["block"]])
        res["losses"] = got["loss"].tolist()
        acc = block_accuracy(block_from_state(got["state"], run["_like"]), run["_x_t"],
                             test[1])
        res.update(test_accuracy=acc, test_accuracy_equal=acc == rep["simulator"]["test_accuracy"],
                   **_loss_window(got["loss"]))
        rep[where] = res
    k = bundle.num_classes
    n_eval = report["eval_images"]
    scores, off = _take(data, off, np.dtype("<i4"), (n_eval, k))
    tail = np.frombuffer(data[off:], np.dtype([("c", "<u8"), ("s", "<u4")]))
    if len(tail) != 1:
        raise FirmwareError(f"training harness output has {len(data)} bytes: its tail is "
                            f"{len(data) - off} bytes, expected 12")
    cal, stack = int(tail[0]["c"]), int(tail[0]["s"])
    # the int8 pipeline with the weights the C returned, on every test vector
    c_graphs = list(graphs)
    for run, rep, got in zip(runs, report["blocks"], blocks_got, strict=True):
        c_graphs[rep["block"]] = with_state(bundle.graphs[rep["block"]], got["state"],
                                            run["_parts"])
    acc = pipeline_accuracy(reference_pipeline(bundle, c_graphs), *test)
    out = {"scores_bit_exact": bool(np.array_equal(scores.astype(np.int64), want_scores)),
           "pipeline_test_accuracy": acc,
           "bit_exact": all(r[where]["int8_bit_exact"] and r[where]["inference_params_bit_exact"]
                            for r in report["blocks"])}
    out["bit_exact"] = out["bit_exact"] and out["scores_bit_exact"]
    if arm is not None:
        build, profile = arm
        if cal <= 0:
            raise FirmwareError("the emulated run has no instruction counter")
        per_tick = CALIBRATION_INSTRUCTIONS / cal
        out.update(_build_measured(build, stack))
        for run, rep, got in zip(runs, report["blocks"], blocks_got, strict=True):
            rep[where].update(_measured(got, rep["planned"], run["batch"], profile, per_tick))
    return out
