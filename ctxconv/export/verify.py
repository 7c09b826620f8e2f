"""Cross-runtime verification at export: float torch, onnxruntime, LiteRT, TFLM.

Each block is fed the same int8 input (the LiteRT reference chain's) in every runtime;
from the first contextual block on, sample j runs under candidate context j mod K in every
block, so later blocks see the features of a real multipass pass;
outputs are compared with the LiteRT reference-kernel output in LSB (units of the
output's quantization step). The limit is ``max_lsb`` per output, widened for a block
whose elementwise ops (ADD, MUL) read a requantized intermediate with a coarser step
than their output: a rounding difference of 1 LSB there is ``step_in / step_out`` LSB
after them (``lsb_allowance``). Float torch is run on the dequantized input, so its
difference is the block's quantization error. Top-1 agreement is measured on whole
pipelines over the same images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.blockgraph.manifest import first_contextual
from ctxconv.blockgraph.ops import l2norm
from ctxconv.blockgraph.pipeline import (
    BlockPipeline,
    dequantize,
    io_quant,
    one_hot_int8,
    score_output,
)
from ctxconv.runtimes.factory import make_runners
from ctxconv.train.inference import class_scores
from ctxconv.train.model import ContextualNet

TFLM_ARENA_MARGIN = 2.0  # verification arena = margin * activations + fixed slack
TFLM_ARENA_SLACK = 32 * 1024


class VerificationError(RuntimeError):
    """Runtimes disagree beyond the configured thresholds."""

    def __init__(self, failures: list[str], manifest: dict[str, Any]) -> None:
        super().__init__("export verification failed: " + "; ".join(failures))
        self.failures = failures
        self.manifest = manifest


def verification_arena(block: dict[str, Any]) -> int:
    """A generous TFLM arena for verification runs (the simulator measures the minimum)."""
    act = sum(int(np.prod(t["shape"])) for t in block["inputs"] + block["outputs"])
    return int(TFLM_ARENA_MARGIN * act * 2 + TFLM_ARENA_SLACK)


ELEMENTWISE = ("ADD", "MUL")


def lsb_allowance(graph: BlockGraph) -> int:
    """How many output LSB one LSB of rounding difference in an elementwise op's computed
    input can become: max over ADD/MUL inputs that are activations of ceil(step_in /
    step_out), at least 1."""
    allowance = 1.0
    produced = {o for op in graph.ops for o in op.outputs}
    for op in graph.ops:
        if op.kind not in ELEMENTWISE:
            continue
        out = graph.tensors[op.outputs[0]].quant
        for name in op.inputs:
            q = graph.tensors[name].quant
            if name in produced and q is not None and out is not None:
                allowance = max(allowance, float(q.scale.max()) / float(out.scale.max()))
    return int(np.ceil(allowance - 1e-9))


def l2_levels(graph: BlockGraph) -> float | None:
    """RMS output value, in LSB, of the block's per-sample normalisation (None without
    one): a unit-norm vector of n values at step 1/128 has an RMS of 128 / sqrt(n) LSB."""
    for op in graph.ops:
        if ops.normalizes_per_sample(op.kind):
            return ops.unit_rms_lsb(graph, op)
    return None


def verification_limits(graph: BlockGraph) -> dict[str, Any]:
    """What the manifest records of an int8 block for its verification: ``lsb_allowance``
    and, with a per-sample normalisation, its output's RMS in LSB (``l2_output_lsb``)."""
    limits: dict[str, Any] = {"lsb_allowance": lsb_allowance(graph)}
    coarse = l2_levels(graph)
    if coarse is not None:
        limits["l2_output_lsb"] = coarse
    return limits


def _runners(manifest: dict[str, Any], export_dir: Path) -> dict[str, list[Any]]:
    """The runtimes to compare, from the one runner factory, on the files just written
    (the manifest's digests come after verification, so nothing is checked against them)."""
    runners: dict[str, list[Any]] = {}
    blocks = manifest["blocks"]
    if all("tflite" in b["files"] for b in blocks):
        tflite = [(export_dir / b["files"]["tflite"]).read_bytes() for b in blocks]
        bundle = ExportBundle(export_dir, manifest, [], tflite)
        runners["litert_ref"] = make_runners(bundle, "litert")
        runners["tflm"] = make_runners(bundle, "tflm", [verification_arena(b) for b in blocks])
        runners["litert"] = make_runners(bundle, "litert_optimized")
    if all("onnx" in b["files"] for b in blocks):
        runners["onnxruntime"] = make_runners(ExportBundle(export_dir, manifest, [], []),
                                              "onnxruntime")
    return runners


def _torch_block(model: ContextualNet, index: int, x_nhwc: np.ndarray,
                 context: np.ndarray | None) -> dict[str, np.ndarray]:
    block = model.blocks[index]
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).float()
    ctx = torch.from_numpy(context).float() if context is not None else None
    with torch.no_grad():
        h = block(x, ctx)
        if not block.has_linear_goodness:  # energy: the goodness under the given context
            return {"features": h.permute(0, 2, 3, 1).numpy(),
                    "goodness": block.goodness(h, ctx)[:, None].numpy()}
        scores = block.goodness.scores(h)
    return {"features": h.permute(0, 2, 3, 1).numpy(), "scores": scores.numpy()}


def verify_blocks(model: ContextualNet, manifest: dict[str, Any], export_dir: Path, test,
                  opts) -> dict[str, Any]:
    """Per-block max |diff| and pipeline top-1 agreement; ``passed`` against the thresholds."""
    model = model.eval().to(memory_format=torch.contiguous_format)
    n = min(opts.verify_samples, len(test))
    runners = _runners(manifest, export_dir)
    reference = "litert_ref" if "litert_ref" in runners else "onnxruntime"
    k = int(manifest["dataset"]["num_classes"])
    int8 = manifest["int8"]
    raw = np.load(export_dir / "test_vectors.npz")["images"][:n]
    ref_pipe = BlockPipeline(manifest, runners[reference])
    x = ref_pipe.quantize_images(raw)
    contexts = np.stack([one_hot_int8(i % k, k, 1)[0] for i in range(n)])  # (n, K) int8
    per_block: list[dict[str, Any]] = []
    failures: list[str] = []
    first = first_contextual(manifest["blocks"])
    for i, block in enumerate(manifest["blocks"]):
        ctx_int8 = contexts if block["contextual"] else None
        ctx_float = (contexts > 0).astype(np.float32) if block["contextual"] else None
        feeds = {"features_in": x} if ctx_int8 is None else {"features_in": x,
                                                            "context": ctx_int8 if int8
                                                            else ctx_float}
        outs = {name: rs[i].run(feeds) for name, rs in runners.items()}
        ref = outs[reference]
        row: dict[str, Any] = {"block": block["name"]}
        if int8:
            row["lsb_limit"] = opts.max_lsb * block["lsb_allowance"]
            if "l2_output_lsb" in block:
                row["l2_output_lsb"] = block["l2_output_lsb"]
        for name, out in outs.items():
            if name == reference:
                continue
            diffs = {o: int(np.abs(out[o].astype(np.int64) - ref[o].astype(np.int64)).max())
                     if int8 else float(np.abs(out[o] - ref[o]).max()) for o in ref}
            row[name] = {"max_diff": max(diffs.values()), "per_output": diffs}
        # float torch on the same (dequantized) input: the quantization error in LSB
        if int8:
            s_in, z_in = io_quant(block, "features_in", "inputs")
            xf = dequantize(x, s_in, z_in)
        else:
            xf = x
        # from the first contextual block on, torch's goodness is the one under the pass's context
        later = first is not None and i >= first
        tout = _torch_block(model, i, xf, (contexts > 0).astype(np.float32) if later else None)
        row["torch_float"] = {}
        for o in ("features", score_output(block)):
            if int8:
                s, z = io_quant(block, o)
                err = np.abs(dequantize(ref[o], s, z) - tout[o]) / s
            else:
                err = np.abs(ref[o] - tout[o])
            row["torch_float"][o] = {"max": float(err.max()), "mean": float(err.mean())}
        per_block.append(row)
        x = ref["features"]  # sample j keeps context j % K in every later block
    # pipeline top-1 agreement with the reference runtime, per mode
    top1: dict[str, dict[str, float]] = {}
    modes = list(manifest["modes"])
    preds = {name: BlockPipeline(manifest, rs).predict_modes(raw, modes)
             for name, rs in runners.items()}
    float_x = BlockPipeline({**manifest, "int8": False}, []).quantize_images(raw)
    float_x = torch.from_numpy(float_x.transpose(0, 3, 1, 2).copy())
    for mode in modes:
        ref_pred = preds[reference][mode]
        top1[mode] = {name: float((p[mode] == ref_pred).mean())
                      for name, p in preds.items() if name != reference}
        tpred = class_scores(model, float_x, mode).argmax(1).numpy()
        top1[mode]["torch_float"] = float((tpred == ref_pred).mean())
    for row in per_block:
        for name in ("tflm", "onnxruntime"):
            limit = row.get("lsb_limit", opts.max_lsb)
            if name in row and int8 and row[name]["max_diff"] > limit:
                why = ""
                if "l2_output_lsb" in row:
                    why = (f" (its {l2norm.KIND} has TFLM's fixed int8 output step 1/128, so "
                           f"a unit-norm vector of its length is about {row['l2_output_lsb']:.1f} "
                           "LSB per value: one LSB of rounding is a large relative error that "
                           "the next ops amplify; norm=batch avoids it)")
                failures.append(f"{row['block']}: {name} differs from {reference} by "
                                f"{row[name]['max_diff']} LSB (limit {limit}){why}")
    for mode, rows in top1.items():
        for name, agree in rows.items():
            if name in ("tflm", "onnxruntime") and agree < opts.min_top1_agreement:
                failures.append(f"{mode}: {name} top-1 agreement {agree:.4f} < "
                                f"{opts.min_top1_agreement}")
    return {"reference": reference, "samples": n, "blocks": per_block, "top1": top1,
            "thresholds": {"max_lsb": opts.max_lsb,
                           "min_top1_agreement": opts.min_top1_agreement},
            "passed": not failures, "failures": failures}


def agreement_table(agreement: dict[str, Any]) -> str:
    """A table for people: per block, max |diff| of each runtime vs the reference."""
    names = ["tflm", "onnxruntime", "litert", "torch_float"]
    lines = [f"reference: {agreement['reference']}  ({agreement['samples']} test images)",
             f"{'block':<8}" + "".join(f"{n:>14}" for n in names)]
    for row in agreement["blocks"]:
        cells = []
        for n in names:
            if n not in row:
                cells.append(f"{'-':>14}")
            elif n == "torch_float":
                err = row[n].get("scores") or row[n]["goodness"]
                cells.append(f"{err['max']:>11.2f} LSB")
            else:
                cells.append(f"{row[n]['max_diff']:>10} LSB")
        lines.append(f"{row['block']:<8}" + "".join(cells))
    for mode, rows in agreement["top1"].items():
        cells = "  ".join(f"{n} {v:.2%}" for n, v in rows.items())
        lines.append(f"top-1 agreement ({mode}): {cells}")
    lines.append("verification: " + ("passed" if agreement["passed"] else
                                     "FAILED: " + "; ".join(agreement["failures"])))
    return "\n".join(lines)
