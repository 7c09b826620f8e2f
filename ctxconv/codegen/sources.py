"""C source text of one export: constants, kernel parameters, block functions, API.

Everything a kernel needs that can be computed before run time is computed here and
written as ``const`` data (requantization multipliers and shifts, clamp ranges, padding,
the input-offset folded into fully connected biases, the input quantization table), so the
generated code does integer arithmetic only and checks nothing the generator can check.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ctxconv.blockgraph.fixedpoint import (
    activation_range_int8,
    channel_multipliers,
    quantize_multiplier,
    wrap_int32,
)
from ctxconv.blockgraph.ir import BlockGraph, Tensor, compute_padding
from ctxconv.blockgraph.manifest import first_contextual
from ctxconv.blockgraph.pipeline import BlockPipeline, score_output, score_weights
from ctxconv.memory.c_arena import CONTEXT, ArenaLayout, Step, conv_k_padded

ADD_LEFT_SHIFT = 20  # TFLite's int8 ADD
#: Block-graph ops the C runtime has a kernel for (RESHAPE is a view).
C_OPS = ("CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "ADD", "MUL", "MEAN",
         "L2_NORMALIZATION", "RESHAPE")


class CGenerationError(ValueError):
    """A block graph the C writer cannot express exactly; the message says which part."""


def c_array(ctype: str, name: str, values: np.ndarray, per_line: int = 24) -> str:
    """``static const ctype name[n] = {...};`` with INT32_MIN spelled portably."""
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    items = ["(-2147483647 - 1)" if v == -(1 << 31) else str(int(v)) for v in flat]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines) if lines else "0"
    return f"static const {ctype} {name}[{max(len(items), 1)}] = {{\n    {body}\n}};\n"


def c_string(text: str) -> str:
    """A C string literal of ``text`` (UTF-8): printable ASCII as is; every other byte, the
    quote, the backslash and ``?`` (trigraphs) as octal escapes."""
    out = []
    for b in text.encode("utf-8"):
        ch = chr(b)
        out.append(ch if 32 <= b < 127 and ch not in '"\\?' else f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def conv_weight_layout(rows: np.ndarray) -> np.ndarray:
    """(cout, k_padded) int8 rows -> the C conv layout (``ctxconv_kernels.h``): channel
    pairs interleaved in groups of 4 weights, an odd last row alone."""
    cout, kp = rows.shape
    groups = rows.reshape(cout, kp // 4, 4)
    pairs = cout // 2 * 2
    paired = groups[:pairs].reshape(pairs // 2, 2, kp // 4, 4).transpose(0, 2, 1, 3)
    return np.concatenate([paired.reshape(-1), groups[pairs:].reshape(-1)])


def _q(t: Tensor) -> tuple[float, int]:
    if t.quant is None or t.dtype != "int8":
        raise CGenerationError(f"tensor {t.name!r} is {t.dtype} without int8 quantization; "
                               "the C writer needs a full-integer int8 export (--int8)")
    return float(np.float32(t.quant.scale[0])), int(t.quant.zero_point[0])


def _act(step: Step, g: BlockGraph) -> tuple[int, int]:
    scale, zp = _q(g.tensors[step.op.outputs[0]])
    return activation_range_int8(bool(step.op.options.get("relu", False)), scale, zp)


def _weights_bias(step: Step, g: BlockGraph) -> tuple[np.ndarray, np.ndarray]:
    op = step.op
    w = g.tensors[op.inputs[1]]
    if w.quant is None or np.any(w.quant.zero_point != 0):
        raise CGenerationError(f"{g.name}: {op.kind} weight {w.name!r} must be symmetric int8")
    cout = w.shape[0]
    bias = np.zeros(cout, np.int64)
    if len(op.inputs) > 2 and op.inputs[2]:
        bias = g.tensors[op.inputs[2]].data.astype(np.int64)
    return w.data.astype(np.int64), bias


def _check_accumulator(g: BlockGraph, step: Step, w: np.ndarray, bias: np.ndarray) -> None:
    """|acc| <= 255 * max row L1 + max |bias| must fit int32: no overflow is possible."""
    bound = 255 * int(np.abs(w.reshape(w.shape[0], -1)).sum(axis=1).max()) + int(
        np.abs(bias).max(initial=0))
    if bound >= 1 << 31:
        raise CGenerationError(f"{g.name}: {step.op.kind} accumulator can reach {bound}, beyond "
                               "int32; the C kernels keep int32 accumulators")


def _multipliers(step: Step, g: BlockGraph, channels: int) -> tuple[np.ndarray, np.ndarray]:
    op = step.op
    x, w, out = (g.tensors[n] for n in (op.inputs[0], op.inputs[1], op.outputs[0]))
    return channel_multipliers(x.quant, w.quant, out.quant, channels, f"{g.name} {op.kind}")


def _arg(layout: ArenaLayout, name: str | None) -> str:
    return "context" if name == CONTEXT else f"A({layout.offset(name)})"


class BlockSource:
    """Constants and the body of one block's function."""

    def __init__(self, index: int, graph: BlockGraph, layout: ArenaLayout) -> None:
        self.index, self.g, self.layout = index, graph, layout
        self.consts: list[str] = []
        self.body: list[str] = []

    def emit(self) -> str:
        steps = [s for s in self.layout.steps if s.block == self.index]
        shared: list[str] = []
        looped: list[str] = []  # the ops that read the context: once per candidate
        for j, step in enumerate(steps):
            before = len(self.body)
            self._step(j, step)
            (looped if step.per_context else shared).extend(self.body[before:])
        name = self.g.name
        head = f"/* ---- {name}: " + ", ".join(
            f"{n} {tuple(self.g.tensors[n].shape)}" for n in self.g.inputs) + " -> " + ", ".join(
            f"{n} {tuple(self.g.tensors[n].shape)}" for n in self.g.outputs) + " */\n"

        def body(lines: list[str]) -> str:
            return "".join(f"    {line}\n" for line in lines)

        if not looped:
            fn = (f"static void {name}_run(const int8_t *context)\n{{\n    (void)context;\n"
                  + body(shared) + "}\n")
        else:  # multipass shares the context-free part (e.g. the conv of the image)
            fn = (f"static void {name}_shared(void)\n{{\n" + body(shared) + "}\n\n"
                  f"static void {name}_per_context(const int8_t *context)\n{{\n"
                  + body(looped) + "}\n\n"
                  f"static void {name}_run(const int8_t *context)\n{{\n"
                  f"    {name}_shared();\n    {name}_per_context(context);\n}}\n")
        return head + "".join(self.consts) + fn

    def _step(self, j: int, step: Step) -> None:
        kind = step.op.kind
        p = f"{self.g.name}_op{j}"
        if kind == "RESHAPE":  # a view: same bytes (the layout aliases it)
            return
        handler = {"CONV_2D": self._conv, "FULLY_CONNECTED": self._fc, "ADD": self._add,
                   "MAX_POOL_2D": self._pool, "AVERAGE_POOL_2D": self._pool,
                   "MUL": self._mul, "MEAN": self._mean,
                   "L2_NORMALIZATION": self._l2norm}.get(kind)
        if handler is None:
            raise CGenerationError(f"{self.g.name}: op {kind} has no C kernel; the C writer "
                                   f"supports {', '.join(C_OPS)}")
        handler(p, step)

    def _conv(self, p: str, step: Step) -> None:
        g, op = self.g, step.op
        x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        w, bias = _weights_bias(step, g)
        _check_accumulator(g, step, w, bias)
        cout, kh, kw, cin = w.shape
        _, h, wd, _ = x.shape
        _, ho, wo, _ = out.shape
        sh, sw = (int(v) for v in op.options["stride"])
        pad = str(op.options["padding"])
        oh, top, _ = compute_padding(h, kh, sh, pad)
        ow, left, _ = compute_padding(wd, kw, sw, pad)
        if (oh, ow) != (ho, wo):
            raise CGenerationError(f"{g.name}: conv output {out.shape} does not match its input")
        kp = conv_k_padded(op, g)
        rows = np.zeros((cout, kp), np.int64)
        rows[:, : kh * kw * cin] = w.reshape(cout, -1)
        rows = conv_weight_layout(rows)
        mult, shift = _multipliers(step, g, cout)
        (_, in_zp), (_, out_zp) = _q(x), _q(out)
        lo, hi = _act(step, g)
        self.consts += [c_array("int8_t", f"{p}_w", rows), c_array("int32_t", f"{p}_b", bias),
                        c_array("int32_t", f"{p}_m", mult), c_array("int32_t", f"{p}_s", shift)]
        self.consts.append(
            f"static const ctxconv_conv_params {p} = {{{h}, {wd}, {cin}, {ho}, {wo}, {cout}, "
            f"{kh}, {kw}, {sh}, {sw}, {top}, {left}, {kp}, {-in_zp}, {out_zp}, {lo}, {hi}, "
            f"{p}_w, {p}_b, {p}_m, {p}_s}};\n")
        col = f"(int16_t *)(void *)A({self.layout.offset(step.scratch)})"
        self.body.append(f"ctxconv_conv_s8(&{p}, {_arg(self.layout, step.inputs[0])}, "
                         f"{_arg(self.layout, step.output)}, {col});")

    def _fc(self, p: str, step: Step) -> None:
        g, op = self.g, step.op
        x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        w, bias = _weights_bias(step, g)
        _check_accumulator(g, step, w, bias)
        n_out, n_in = w.shape
        if int(np.prod(x.shape)) != n_in:
            raise CGenerationError(f"{g.name}: fully connected input {x.shape} is not {n_in} long")
        (_, in_zp), (_, out_zp) = _q(x), _q(out)
        folded = bias - in_zp * w.sum(axis=1)  # sum_k w (x - zp) + b = sum_k w x + folded
        folded = ((folded + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)  # int32 wrap, as the device
        mult, shift = _multipliers(step, g, n_out)
        lo, hi = _act(step, g)
        self.consts += [c_array("int8_t", f"{p}_w", w), c_array("int32_t", f"{p}_b", folded),
                        c_array("int32_t", f"{p}_m", mult), c_array("int32_t", f"{p}_s", shift)]
        self.consts.append(f"static const ctxconv_fc_params {p} = {{{n_in}, {n_out}, {out_zp}, "
                           f"{lo}, {hi}, {p}_w, {p}_b, {p}_m, {p}_s}};\n")
        self.body.append(f"ctxconv_fc_s8(&{p}, {_arg(self.layout, step.inputs[0])}, "
                         f"{_arg(self.layout, step.output)});")

    def _pool(self, p: str, step: Step) -> None:
        g, op = self.g, step.op
        x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        if _q(x) != _q(out):
            raise CGenerationError(f"{g.name}: {op.kind} must keep its input's quantization")
        _, h, w, c = x.shape
        fh, fw = (int(v) for v in op.options["filter"])
        sh, sw = (int(v) for v in op.options["stride"])
        pad = str(op.options["padding"])
        ho, top, _ = compute_padding(h, fh, sh, pad)
        wo, left, _ = compute_padding(w, fw, sw, pad)
        lo, hi = _act(step, g)
        self.consts.append(f"static const ctxconv_pool_params {p} = {{{h}, {w}, {c}, {ho}, "
                           f"{wo}, {fh}, {fw}, {sh}, {sw}, {top}, {left}, {lo}, {hi}}};\n")
        fn = "ctxconv_max_pool_s8" if op.kind == "MAX_POOL_2D" else "ctxconv_avg_pool_s8"
        self.body.append(f"{fn}(&{p}, {_arg(self.layout, step.inputs[0])}, "
                         f"{_arg(self.layout, step.output)});")

    def _add(self, p: str, step: Step) -> None:
        g, op = self.g, step.op
        names = list(op.inputs[:2])
        a, b, out = g.tensors[names[0]], g.tensors[names[1]], g.tensors[op.outputs[0]]
        if a.nbytes < b.nbytes:
            a, b = b, a
            names.reverse()
        tail = tuple(out.shape)[len(out.shape) - len(b.shape):]
        if tuple(a.shape) != tuple(out.shape) or tuple(b.shape) != tail and any(
                d != 1 for d in b.shape[: len(b.shape) - len(tail)]):
            raise CGenerationError(f"{g.name}: ADD {a.shape} + {b.shape} -> {out.shape}: the C "
                                   "kernel broadcasts only a trailing block of the second operand")
        b_n = int(np.prod([d for d in b.shape]))
        if int(np.prod(out.shape)) % b_n:
            raise CGenerationError(f"{g.name}: ADD operand {b.shape} does not tile {out.shape}")
        (sa, za), (sb, zb), (so, zo) = _q(a), _q(b), _q(out)
        twice_max = 2.0 * max(sa, sb)
        am, bm = quantize_multiplier(sa / twice_max), quantize_multiplier(sb / twice_max)
        om = quantize_multiplier(twice_max / ((1 << ADD_LEFT_SHIFT) * so))
        if max(am[1], bm[1], om[1]) > 0:
            raise CGenerationError(f"{g.name}: int8 ADD needs output_scale >= 2^-20 * max input "
                                   "scale")
        lo, hi = _act(step, g)
        self.consts.append(
            f"static const ctxconv_add_params {p} = {{{int(np.prod(out.shape))}, {b_n}, {-za}, "
            f"{-zb}, {zo}, {ADD_LEFT_SHIFT}, {am[0]}, {am[1]}, {bm[0]}, {bm[1]}, {om[0]}, "
            f"{om[1]}, {lo}, {hi}}};\n")
        arg_a, arg_b = self._operands(p, step, names)
        self.body.append(f"ctxconv_add_s8(&{p}, {arg_a}, {arg_b}, "
                         f"{_arg(self.layout, step.output)});")

    def _operands(self, p: str, step: Step, names: list[str]) -> list[str]:
        """C arguments of a binary op's inputs ``names`` (the op's, in the kernel's order);
        a constant operand goes to flash."""
        arena = dict(zip(step.op.inputs[:2], step.inputs[:2], strict=True))
        args = []
        for j, name in enumerate(names):
            if arena[name] is None:
                self.consts.append(c_array("int8_t", f"{p}_{'ab'[j]}", self.g.tensors[name].data))
                args.append(f"{p}_{'ab'[j]}")
            else:
                args.append(_arg(self.layout, arena[name]))
        return args

    def _mul(self, p: str, step: Step) -> None:
        g, op = self.g, step.op
        na, nb = op.inputs[:2]
        arg_a, arg_b = self._operands(p, step, [na, nb])
        a, b, out = g.tensors[na], g.tensors[nb], g.tensors[op.outputs[0]]
        n, b_n = math.prod(out.shape), math.prod(b.shape)
        lead = next((i for i, d in enumerate(b.shape) if d != 1), len(b.shape))
        block = tuple(b.shape[lead:])  # b without its leading ones: a trailing block of out
        if tuple(a.shape) != tuple(out.shape) or block != tuple(out.shape)[
                len(out.shape) - len(block):]:
            raise CGenerationError(f"{g.name}: MUL {a.shape} * {b.shape} -> {out.shape}: the C "
                                   "kernel broadcasts only a trailing block of the second operand")
        (sa, za), (sb, zb), (so, zo) = _q(a), _q(b), _q(out)
        mult, shift = quantize_multiplier(float(np.float64(sa) * np.float64(sb) / so))
        lo, hi = _act(step, g)
        self.consts.append(f"static const ctxconv_mul_params {p} = {{{n}, {b_n}, {-za}, {-zb}, "
                           f"{zo}, {mult}, {shift}, {lo}, {hi}}};\n")
        self.body.append(f"ctxconv_mul_s8(&{p}, {arg_a}, {arg_b}, "
                         f"{_arg(self.layout, step.output)});")

    def _mean(self, p: str, step: Step) -> None:
        g, op = self.g, step.op
        x, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        axes = sorted(int(a) % len(x.shape) for a in op.options["axes"])
        if not axes or 0 in axes or axes != list(range(len(x.shape) - len(axes), len(x.shape))):
            raise CGenerationError(f"{g.name}: MEAN over axes {tuple(op.options['axes'])} of "
                                   f"{x.shape}: the C kernel reduces trailing axes only")
        count = math.prod(x.shape[a] for a in axes)
        if count * 255 >= 1 << 31:
            raise CGenerationError(f"{g.name}: MEAN over {count} elements can overflow int32")
        (si, zi), (so, zo) = _q(x), _q(out)
        mult, shift = quantize_multiplier(float(np.float64(si) / np.float64(so)))
        s = min(count.bit_length() - 1, 32, 31 + shift)  # reference_ops::QuantizedMeanOrSum
        mult, shift = int((mult << s) // count), shift - s
        self.consts.append(f"static const ctxconv_mean_params {p} = {{{x.nbytes // count}, "
                           f"{count}, {int(wrap_int32(np.int64(zi) * count))}, {zo}, {mult}, "
                           f"{shift}}};\n")
        self.body.append(f"ctxconv_mean_s8(&{p}, {_arg(self.layout, step.inputs[0])}, "
                         f"{_arg(self.layout, step.output)});")

    def _l2norm(self, p: str, step: Step) -> None:
        g, op = self.g, step.op
        x = g.tensors[op.inputs[0]]
        depth = x.shape[-1]
        if depth * 255**2 >= 1 << 31:
            raise CGenerationError(f"{g.name}: L2_NORMALIZATION over {depth} elements can "
                                   "overflow its int32 sum of squares")
        (_, zi), (so, zo) = _q(x), _q(g.tensors[op.outputs[0]])
        if (so, zo) != (1 / 128, 0):
            raise CGenerationError(f"{g.name}: L2_NORMALIZATION output must be int8 scale 1/128, "
                                   "zero point 0")
        self.consts.append(f"static const ctxconv_l2norm_params {p} = {{"
                           f"{x.nbytes // depth}, {depth}, {-zi}}};\n")
        self.body.append(f"ctxconv_l2norm_s8(&{p}, {_arg(self.layout, step.inputs[0])}, "
                         f"{_arg(self.layout, step.output)});")


def input_table(manifest: dict[str, Any]) -> np.ndarray:
    """(C, 256) int8: block 0's quantized input for every raw pixel value of each channel.

    Computed with the pipeline's own ``quantize_images``, so the table is exact.
    """
    c = int(manifest["dataset"]["in_channels"])
    raw = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None, None], (256, 1, 1, c))
    q = BlockPipeline(manifest, []).quantize_images(np.ascontiguousarray(raw))
    return q.reshape(256, c).T


def header(manifest: dict[str, Any], graphs: list[BlockGraph], layout: ArenaLayout) -> str:
    """ctxconv_model.h: sizes, block table and the API."""
    k = int(manifest["dataset"]["num_classes"])
    _, h, w, c = graphs[0].tensors["features_in"].shape
    ctx = manifest["context"]
    modes = manifest["modes"]
    protos = "".join(
        f"/* {m}: see README.md */\n"
        f"void ctxconv_classify_{m}(const int8_t *input, int32_t scores[CTXCONV_NUM_CLASSES]);\n"
        for m in modes)
    names = ", ".join(c_string(str(n)) for n in manifest["dataset"]["class_names"])
    title = f"{manifest['dataset']['name']}, {len(graphs)} int8 blocks"
    return f"""/* Generated by ctxconv-export: {title}.
 * Do not edit; regenerate with `ctxconv-export EXPORT_DIR --format c`. */
#ifndef CTXCONV_MODEL_H
#define CTXCONV_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define CTXCONV_NUM_CLASSES {k}
#define CTXCONV_NUM_BLOCKS {len(graphs)}
#define CTXCONV_INPUT_H {h}
#define CTXCONV_INPUT_W {w}
#define CTXCONV_INPUT_C {c}
#define CTXCONV_INPUT_BYTES {h * w * c}
#define CTXCONV_ARENA_BYTES {layout.size}
#define CTXCONV_CONTEXT_ON {int(ctx['on'])}
#define CTXCONV_CONTEXT_OFF {int(ctx['off'])}
#define CTXCONV_CLASS_NAMES {{{names}}}

typedef struct {{
    int32_t contextual;       /* takes the one-hot context (run once per class in multipass) */
    int32_t score_block;      /* its class scores are summed into ctxconv_classify's */
    int32_t features_bytes;   /* int8 NHWC output feature map */
    int32_t score_zero_point; /* zero point of its int8 goodness output */
    int32_t score_weight;     /* fixed-point weight of its scores in the class-score sum */
    int32_t score_bytes;      /* int8 goodness values per run: CTXCONV_NUM_CLASSES (one per
                               * class), or 1 (energy goodness under the run's context) */
}} ctxconv_block_info;

extern const ctxconv_block_info ctxconv_blocks[CTXCONV_NUM_BLOCKS];

/* The arena slot of block 0's int8 input; classify reads it in place (no copy). */
int8_t *ctxconv_input_buffer(void);
/* Raw pixels (H x W x C, uint8, as the dataset stores them) -> block 0's int8 input. */
void ctxconv_quantize_image(const uint8_t *pixels, int8_t *input);
/* Run block `index` on the arena (its input is the previous block's features, or the
 * input slot for block 0); `context` is the one-hot int8 context of a contextual block
 * (NULL otherwise). Returns its int8 goodness output (ctxconv_blocks[index].score_bytes
 * values); NULL for a bad index. */
const int8_t *ctxconv_run_block(int32_t index, const int8_t *context);
/* Block `index`'s int8 output features, valid until the next block runs. */
const int8_t *ctxconv_block_features(int32_t index);
/* Class scores (int32, one fixed-point scale for all blocks) of an int8 input; the input
 * buffer is reused as scratch. ctxconv_classify is the export's default mode ({modes[0]}). */
{protos}void ctxconv_classify(const int8_t *input, int32_t scores[CTXCONV_NUM_CLASSES]);
/* Index of the largest score (the first one on ties). */
int32_t ctxconv_argmax(const int32_t scores[CTXCONV_NUM_CLASSES]);

#ifdef __cplusplus
}}
#endif

#endif /* CTXCONV_MODEL_H */
"""


def source(manifest: dict[str, Any], graphs: list[BlockGraph], layout: ArenaLayout) -> str:
    """ctxconv_model.c: constants in flash, the static arena, block functions, classify."""
    blocks = manifest["blocks"]
    weights, _ = score_weights(manifest)
    parts = [f"""/* Generated by ctxconv-export; see ctxconv_model.h. */
#include "ctxconv_model.h"

#include <string.h>

#include "ctxconv_kernels.h"

/* All activations of all blocks: offsets laid out at generation time ({layout.size} bytes). */
static union {{
    int32_t align;
    int8_t bytes[CTXCONV_ARENA_BYTES];
}} arena;
#define A(offset) (arena.bytes + (offset))

""", "static int8_t context_buffer[CTXCONV_NUM_CLASSES];\n\n"
             if any(b["contextual"] for b in blocks) else "",
             c_array("int8_t", "input_table", input_table(manifest), per_line=32)]
    for i, g in enumerate(graphs):
        parts.append("\n" + BlockSource(i, g, layout).emit())
    info = ",\n".join(
        f"    {{{int(b['contextual'])}, {int(b['score_block'])}, "
        f"{g.tensors['features'].nbytes}, {_q(g.tensors[score_output(b)])[1]}, {weights[i]}, "
        f"{g.tensors[score_output(b)].nbytes}}}"
        for i, (b, g) in enumerate(zip(blocks, graphs, strict=True)))
    runs = "".join(f"    case {i}: {g.name}_run(context); "
                   f"return A({layout.offset(f'b{i}.{score_output(b)}')});\n"
                   for i, (b, g) in enumerate(zip(blocks, graphs, strict=True)))
    feats = "".join(f"    case {i}: return A({layout.offset(f'b{i}.features')});\n"
                    for i in range(len(graphs)))
    parts.append(f"""
const ctxconv_block_info ctxconv_blocks[CTXCONV_NUM_BLOCKS] = {{
{info}
}};

int8_t *ctxconv_input_buffer(void)
{{
    return A({layout.offset('input')});
}}

void ctxconv_quantize_image(const uint8_t *pixels, int8_t *input)
{{
    for (int32_t i = 0; i < CTXCONV_INPUT_BYTES; ++i) {{
        input[i] = input_table[(i % CTXCONV_INPUT_C) * 256 + pixels[i]];
    }}
}}

const int8_t *ctxconv_run_block(int32_t index, const int8_t *context)
{{
    switch (index) {{
{runs}    default: return 0;
    }}
}}

const int8_t *ctxconv_block_features(int32_t index)
{{
    switch (index) {{
{feats}    default: return 0;
    }}
}}

static void load_input(const int8_t *input, int32_t scores[CTXCONV_NUM_CLASSES])
{{
    if (input != A({layout.offset('input')})) {{
        memmove(A({layout.offset('input')}), input, CTXCONV_INPUT_BYTES);
    }}
    for (int32_t k = 0; k < CTXCONV_NUM_CLASSES; ++k) {{
        scores[k] = 0;
    }}
}}

int32_t ctxconv_argmax(const int32_t scores[CTXCONV_NUM_CLASSES])
{{
    int32_t best = 0;
    for (int32_t k = 1; k < CTXCONV_NUM_CLASSES; ++k) {{
        if (scores[k] > scores[best]) {{
            best = k;
        }}
    }}
    return best;
}}
""")
    for mode in manifest["modes"]:
        parts.append(_classify(mode, blocks, graphs, weights, layout))
    parts.append(f"""
void ctxconv_classify(const int8_t *input, int32_t scores[CTXCONV_NUM_CLASSES])
{{
    ctxconv_classify_{manifest['modes'][0]}(input, scores);
}}
""")
    return "".join(parts)


def _classify(mode: str, blocks: list[dict[str, Any]], graphs: list[BlockGraph],
              weights: list[int], layout: ArenaLayout) -> str:
    """One classify function. The blocks before the first contextual block run once; then
    that block's context-free part runs once, and per candidate context its part that reads
    the context and every later block (their inputs depend on the context)."""
    body = ["    const int8_t *q;", "    load_input(input, scores);"]
    first = first_contextual(blocks)
    shared = len(blocks) if first is None else first

    def add(i: int, index: str) -> str:
        name = score_output(blocks[i])
        zp = _q(graphs[i].tensors[name])[1]
        at = "0" if name == "goodness" else index  # one goodness per pass, or K
        return (f"scores[{index}] += (q[{at}] - ({zp})) * {weights[i]};"
                if blocks[i]["score_block"] else "(void)q;")

    for i in range(shared):
        body.append(f"    q = ctxconv_run_block({i}, 0);")
        body.append("    for (int32_t k = 0; k < CTXCONV_NUM_CLASSES; ++k) {"
                    f" {add(i, 'k')} }}" if blocks[i]["score_block"] else "    (void)q;")
    if first is None:
        return _function(mode, body)
    if mode != "multipass":
        raise CGenerationError(f"{graphs[first].name} is contextual: only multipass can run it")
    g = graphs[first]
    split = any(s.per_context for s in layout.steps if s.block == first)
    run = ([f"{g.name}_per_context(context_buffer);",
            f"q = A({layout.offset(f'b{first}.{score_output(blocks[first])}')});"] if split
           else [f"q = ctxconv_run_block({first}, context_buffer);"])
    loop = [*run, add(first, "k")]
    for i in range(first + 1, len(blocks)):  # on candidate k's features
        loop += [f"q = ctxconv_run_block({i}, context_buffer);", add(i, "k")]
    body += ([f"    {g.name}_shared();"] if split else []) + [
        "    for (int32_t k = 0; k < CTXCONV_NUM_CLASSES; ++k) {",
        "        memset(context_buffer, CTXCONV_CONTEXT_OFF, sizeof context_buffer);",
        "        context_buffer[k] = CTXCONV_CONTEXT_ON;",
        *(f"        {line}" for line in loop), "    }"]
    return _function(mode, body)


def _function(mode: str, body: list[str]) -> str:
    return (f"\nvoid ctxconv_classify_{mode}(const int8_t *input, "
            "int32_t scores[CTXCONV_NUM_CLASSES])\n{\n" + "\n".join(body) + "\n}\n")
