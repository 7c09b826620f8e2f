"""C source text of one export: constants, kernel parameters, block functions, API.

Every op's run-time parameters come from its ``ops.<op>.prepare`` (the same ``Params``
the numpy reference runs on: requantization multipliers and shifts, clamp ranges,
padding, the input offset folded into fully connected biases) and are written as ``const``
structs with designated initializers, so the generated code does integer arithmetic only
and checks nothing the generator can check. The writer adds only the byte layout a C
kernel reads (the conv weight rows) and the input quantization table.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import BlockGraph, Tensor
from ctxconv.blockgraph.manifest import first_contextual
from ctxconv.blockgraph.ops.base import c_fields
from ctxconv.blockgraph.pipeline import BlockPipeline, score_output, score_weights
from ctxconv.codegen import training
from ctxconv.memory.c_arena import CONTEXT, ArenaLayout, Step


class CGenerationError(ValueError):
    """A block graph the C writer cannot express exactly; the message says which part."""


def c_array(ctype: str, name: str, values: np.ndarray, per_line: int = 24,
            storage: str = "static const", attr: str = "CTXCONV_WEIGHTS_ATTR") -> str:
    """``static const ctype name[n] = {...};`` with INT32_MIN spelled portably (``storage``
    and ``attr``: a trainable block's macros, which make it RAM when it learns)."""
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    items = ["(-2147483647 - 1)" if v == -(1 << 31) else str(int(v)) for v in flat]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    body = ",\n    ".join(lines) if lines else "0"
    align = " CTXCONV_ALIGN4" if ctype == "int8_t" else ""  # int32_t: aligned already
    return (f"{storage} {ctype} {name}[{max(len(items), 1)}]{align} {attr} = "
            f"{{\n    {body}\n}};\n")


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


def c_int(v: int) -> str:
    """An int32 literal, INT32_MIN spelled portably."""
    return "(-2147483647 - 1)" if int(v) == -(1 << 31) else str(int(v))


def _conv_weights(weights: np.ndarray, params: Any) -> np.ndarray:
    """OHWI int8 weights -> rows padded to ``k_padded``, in the C conv layout."""
    cout = weights.shape[0]
    rows = np.zeros((cout, params.k_padded), np.int64)
    rows[:, : weights[0].size] = weights.reshape(cout, -1)
    return conv_weight_layout(rows)


#: (C struct, field) -> the byte layout its kernel reads, where it is not the Params array's.
_C_LAYOUT = {("ctxconv_conv_params", "weights"): _conv_weights}
#: Block-graph ops the C runtime has a kernel for (or, like RESHAPE, aliases as a view).
C_OPS = tuple(kind for kind, m in ops.REGISTRY.items()
              if hasattr(m, "C_FUNCTIONS") or getattr(m, "IS_VIEW", False))


def _arg(layout: ArenaLayout, name: str | None) -> str:
    return "context" if name == CONTEXT else f"A({layout.offset(name)})"


class BlockSource:
    """Constants and the body of one block's function."""

    def __init__(self, index: int, graph: BlockGraph, layout: ArenaLayout,
                 trainable: bool = False) -> None:
        self.index, self.g, self.layout = index, graph, layout
        self.trainable = trainable  # its conv and head parameters: RAM when it learns
        self.consts: list[str] = []
        self.body: list[str] = []
        self.op_index: dict[str, int] = {}  # op kind -> its j (the arrays' names)

    def emit(self) -> str:
        steps = [s for s in self.layout.steps if s.block == self.index]
        shared: list[tuple[bool, str]] = []  # (head only, call)
        looped: list[tuple[bool, str]] = []  # the ops that read the context: per candidate
        for j, step in enumerate(steps):
            before = len(self.body)
            self._step(j, step)
            part = looped if step.per_context else shared
            part.extend((step.head_only, line) for line in self.body[before:])
        name = self.g.name
        head = f"/* ---- {name}: " + ", ".join(
            f"{n} {tuple(self.g.tensors[n].shape)}" for n in self.g.inputs) + " -> " + ", ".join(
            f"{n} {tuple(self.g.tensors[n].shape)}" for n in self.g.outputs) + " */\n"

        def body(calls: list[tuple[bool, str]], unused: str = "") -> str:
            """The calls; those only the head's scores read run under ``if (head)``."""
            lines: list[str] = []
            for j, (head_only, call) in enumerate(calls):
                opens = head_only and (j == 0 or not calls[j - 1][0])
                lines += (["if (head) {"] if opens else []) + [("    " * head_only) + call]
                if head_only and (j + 1 == len(calls) or not calls[j + 1][0]):
                    lines.append("}")
            unused += "" if any(h for h, _ in calls) else "    (void)head;\n"
            return unused + "".join(f"    {line}\n" for line in lines)

        # head = 0: only the features (the caller does not use this block's scores)
        if not looped:
            fn = (f"static void {name}_run(const int8_t *context, int32_t head)\n{{\n"
                  + body(shared, "    (void)context;\n") + "}\n")
        else:  # multipass shares the context-free part (e.g. the conv of the image)
            fn = (f"static void {name}_shared(int32_t head)\n{{\n" + body(shared) + "}\n\n"
                  f"static void {name}_per_context(const int8_t *context, int32_t head)\n{{\n"
                  + body(looped) + "}\n\n"
                  f"static void {name}_run(const int8_t *context, int32_t head)\n{{\n"
                  f"    {name}_shared(head);\n    {name}_per_context(context, head);\n}}\n")
        macros = training.param_macros(self.index, name) if self.trainable else ""
        return head + macros + "".join(self.consts) + fn

    def _step(self, j: int, step: Step) -> None:
        """One op: its Params (``ops.<op>.prepare``) as a const struct, and the kernel call."""
        g, op = self.g, step.op
        module = ops.REGISTRY.get(op.kind)
        if getattr(module, "IS_VIEW", False):  # a view: same bytes (the layout aliases it)
            return
        if module is None or not hasattr(module, "C_FUNCTIONS"):
            raise CGenerationError(f"{g.name}: op {op.kind} has no C kernel; the C writer "
                                   f"supports {', '.join(C_OPS)}")
        try:
            module.validate(g, op)
            params = module.prepare(g, op)
        except ValueError as exc:
            raise CGenerationError(str(exc)) from None
        if not hasattr(params, "C_STRUCT"):
            raise CGenerationError(f"{g.name}: op {op.kind} is not int8; the C writer needs a "
                                   "full-integer int8 export (--int8)")
        try:
            module.check_c(g, op, params)
        except ValueError as exc:
            raise CGenerationError(f"{g.name}: {exc}") from None
        p = f"{g.name}_op{j}"
        self.op_index.setdefault(op.kind, j)
        self._params(p, params, self.trainable and op.kind in training.TRAINED_OPS)
        if module.BROADCASTS:  # the operands in the kernel's order
            order = getattr(params, "order", (0, 1))
            args = self._operands(p, step, [op.inputs[i] for i in order])
        else:
            args = [_arg(self.layout, step.inputs[0])]
        args.append(_arg(self.layout, step.output))
        if step.scratch is not None:
            args.append(f"({module.C_SCRATCH_TYPE} *)(void *)A({self.layout.offset(step.scratch)})")
        self.body.append(f"{module.C_FUNCTIONS[op.kind]}(&{p}, {', '.join(args)});")

    def _params(self, p: str, params: Any, trained: bool = False) -> None:
        """``static const <C_STRUCT> p = {.field = ..., ...};``, arrays as their own consts
        (``trained``: under the block's storage macros)."""
        name = self.g.name.upper()
        storage = (f"{name}_PARAM", f"{name}_ATTR") if trained else (
            "static const", "CTXCONV_WEIGHTS_ATTR")
        items = []
        for field in c_fields(type(params)):
            value = getattr(params, field)
            if isinstance(value, np.ndarray):
                layout = _C_LAYOUT.get((params.C_STRUCT, field))
                data = value if layout is None else layout(value, params)
                ctype = "int8_t" if value.dtype == np.int8 else "int32_t"
                self.consts.append(c_array(ctype, f"{p}_{field}", data, 24, *storage))
                items.append(f"    .{field} = {p}_{field},")
            else:
                items.append(f"    .{field} = {c_int(value)},")
        self.consts.append(f"static const {params.C_STRUCT} {p} = {{\n" + "\n".join(items)
                           + "\n};\n")

    def _operands(self, p: str, step: Step, names: list[str]) -> list[str]:
        """C arguments of a binary op's inputs ``names`` (in the kernel's order); a constant
        operand goes to flash."""
        arena = dict(zip(step.op.inputs[:2], step.inputs[:2], strict=True))
        args = []
        for j, name in enumerate(names):
            if arena[name] is None:
                self.consts.append(c_array("int8_t", f"{p}_{'ab'[j]}", self.g.tensors[name].data))
                args.append(f"{p}_{'ab'[j]}")
            else:
                args.append(_arg(self.layout, arena[name]))
        return args


def input_table(manifest: dict[str, Any]) -> np.ndarray:
    """(C, 256) int8: block 0's quantized input for every raw pixel value of each channel.

    Computed with the pipeline's own ``quantize_images``, so the table is exact.
    """
    c = int(manifest["dataset"]["in_channels"])
    raw = np.broadcast_to(np.arange(256, dtype=np.uint8)[:, None, None, None], (256, 1, 1, c))
    q = BlockPipeline(manifest, []).quantize_images(np.ascontiguousarray(raw))
    return q.reshape(256, c).T


#: The fields of ``ctxconv_block_info`` (ctxconv_model.h), in order, with their comments.
BLOCK_FIELDS = (
    ("contextual", "takes the one-hot context (run once per class in multipass)"),
    ("score_block", "its class scores are summed into ctxconv_classify's"),
    ("score_weight", "fixed-point weight of its scores in the class-score sum (0: unused)"),
    ("score_zero_point", "zero point of its int8 goodness output"),
    ("score_bytes", "int8 goodness values per run: CTXCONV_NUM_CLASSES, or 1 (energy)"),
    ("score_offset", "arena offset of its goodness output"),
    ("features_bytes", "int8 NHWC output feature map"),
    ("features_offset", "arena offset of its output feature map"),
)


def block_table(manifest: dict[str, Any], graphs: list[BlockGraph], layout: ArenaLayout
                ) -> list[dict[str, int]]:
    """Each block's ``ctxconv_block_info`` values (the one place the C names them)."""
    weights, _ = score_weights(manifest)
    rows = []
    for i, (b, g) in enumerate(zip(manifest["blocks"], graphs, strict=True)):
        score = g.tensors[score_output(b)]
        rows.append({"contextual": int(b["contextual"]), "score_block": int(b["score_block"]),
                     "score_weight": weights[i], "score_zero_point": _q(score)[1],
                     "score_bytes": score.nbytes,
                     "score_offset": layout.offset(f"b{i}.{score_output(b)}"),
                     "features_bytes": g.tensors["features"].nbytes,
                     "features_offset": layout.offset(f"b{i}.features")})
    return rows


def _block_info(rows: list[dict[str, int]]) -> str:
    """The ``ctxconv_blocks`` table, with designated initializers."""
    def entry(i: int, row: dict[str, int]) -> str:
        items = [f".{k} = {c_int(v)}," for k, v in row.items()]
        lines = [" ".join(items[j : j + 4]) for j in range(0, len(items), 4)]
        return f"    [{i}] = {{\n" + "".join(f"        {ln}\n" for ln in lines) + "    },\n"
    return ("const ctxconv_block_info ctxconv_blocks[CTXCONV_NUM_BLOCKS] = {\n"
            + "".join(entry(i, r) for i, r in enumerate(rows)) + "};\n")


def source(manifest: dict[str, Any], graphs: list[BlockGraph], layout: ArenaLayout) -> str:
    """ctxconv_model.c: constants in flash, the static arena, block functions, classify."""
    blocks = manifest["blocks"]
    parts = [f"""/* SPDX-License-Identifier: Apache-2.0 */
/* Generated by ctxconv-export; see ctxconv_model.h. */
#include "ctxconv_model.h"

#include <string.h>

#include "ctxconv_kernels.h"

/* All activations of all blocks: offsets laid out at generation time ({layout.size} bytes). */
static union {{
    int32_t align;
    int8_t bytes[CTXCONV_ARENA_BYTES];
}} arena CTXCONV_ARENA_ATTR;
#define A(offset) (arena.bytes + (offset))
/* Block 0's input slot (scratch once block 0 has run). */
#define INPUT_SLOT A({layout.offset('input')})

""", "static int8_t context_buffer[CTXCONV_NUM_CLASSES];\n\n"
             if any(b["contextual"] for b in blocks) else "",
             c_array("int8_t", "input_table", input_table(manifest), per_line=32)]
    reasons = training.train_reasons(manifest, graphs)
    sources = [BlockSource(i, g, layout, reasons[i] is None) for i, g in enumerate(graphs)]
    for src in sources:
        parts.append("\n" + src.emit())
    runs = "".join(f"    case {i}: {g.name}_run(context, 1); break;\n"
                   for i, g in enumerate(graphs))
    feature_runs = "".join(f"    case {i}: {g.name}_run(0, 0); return 0;\n"
                           for i, (g, b) in enumerate(zip(graphs, blocks, strict=True))
                           if not b["contextual"])
    parts.append(f"""
{_block_info(block_table(manifest, graphs, layout))}
/* Block i's int8 goodness value q on the class-score sum's fixed-point scale. */
#define WEIGHTED(i, q) \\
    (((q) - ctxconv_blocks[i].score_zero_point) * ctxconv_blocks[i].score_weight)

int8_t *ctxconv_input_buffer(void)
{{
    return INPUT_SLOT;
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
    return A(ctxconv_blocks[index].score_offset);
}}

int32_t ctxconv_run_features(int32_t index)
{{
    switch (index) {{
{feature_runs}    default: return -1;
    }}
}}

const int8_t *ctxconv_block_features(int32_t index)
{{
    if (index < 0 || index >= CTXCONV_NUM_BLOCKS) {{
        return 0;
    }}
    return A(ctxconv_blocks[index].features_offset);
}}

static void load_input(const int8_t *input, int32_t scores[CTXCONV_NUM_CLASSES])
{{
    if (input != INPUT_SLOT) {{
        memmove(INPUT_SLOT, input, CTXCONV_INPUT_BYTES);
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
        parts.append(_classify(mode, blocks, graphs, layout, score_weights(manifest)[0]))
    parts.append(f"""
void ctxconv_classify(const int8_t *input, int32_t scores[CTXCONV_NUM_CLASSES])
{{
    ctxconv_classify_{manifest['modes'][0]}(input, scores);
}}
""")
    parts.append(_training_part(sources, reasons))
    return "".join(parts)


def _training_part(sources: list[BlockSource], reasons: list[str | None]) -> str:
    """The descriptors of the trainable blocks (``ctxconv_train.h``), built only when some
    block learns (``CTXCONV_TRAIN_BLOCKS``)."""
    descs = "".join(training.descriptor(s.index, s.g, s.op_index["CONV_2D"],
                                        s.op_index["FULLY_CONNECTED"])
                    for s in sources if s.trainable)
    return ("\n/* ---- on-device training: the blocks built trainable (ctxconv_train.h) */\n"
            "#if CTXCONV_TRAIN_BLOCKS\n#include \"ctxconv_train.h\"\n\n" + descs
            + training.table([s.g for s in sources], reasons) + "#endif\n")


def _classify(mode: str, blocks: list[dict[str, Any]], graphs: list[BlockGraph],
              layout: ArenaLayout, weights: list[int]) -> str:
    """One classify function. The blocks before the first contextual block run once; then
    that block's context-free part runs once, and per candidate context its part that reads
    the context and every later block (their inputs depend on the context). A block whose
    scores weigh 0 runs without its head."""
    first = first_contextual(blocks)
    shared = len(blocks) if first is None else first

    def add(i: int, index: str) -> str:
        at = "0" if score_output(blocks[i]) == "goodness" else index  # one per pass, or K
        return f"scores[{index}] += WEIGHTED({i}, q[{at}]);"

    def run(i: int, context: str) -> list[str]:
        if not weights[i]:
            return [f"{graphs[i].name}_run({context}, 0);"]
        return [f"q = ctxconv_run_block({i}, {context});"]

    body = ["load_input(input, scores);"]
    for i in range(shared):
        body += run(i, "0")
        if weights[i]:
            body.append(f"for (int32_t k = 0; k < CTXCONV_NUM_CLASSES; ++k) {{ {add(i, 'k')} }}")
    if first is not None:
        if mode != "multipass":
            raise CGenerationError(f"{graphs[first].name} is contextual: only multipass can "
                                   "run it")
        g, head = graphs[first], int(weights[first] != 0)
        split = any(s.per_context for s in layout.steps if s.block == first)
        if split:
            body.append(f"{g.name}_shared({head});")
            loop = [f"{g.name}_per_context(context_buffer, {head});"]
            if head:
                loop += [f"q = A(ctxconv_blocks[{first}].score_offset);"]
        else:
            loop = run(first, "context_buffer")
        loop += [add(first, "k")] if head else []
        for i in range(first + 1, len(blocks)):  # on candidate k's features
            loop += run(i, "context_buffer") + ([add(i, "k")] if weights[i] else [])
        body += ["for (int32_t k = 0; k < CTXCONV_NUM_CLASSES; ++k) {",
                 "    memset(context_buffer, CTXCONV_CONTEXT_OFF, sizeof context_buffer);",
                 "    context_buffer[k] = CTXCONV_CONTEXT_ON;",
                 *(f"    {line}" for line in loop), "}"]
    if any(weights):  # some block's scores are summed: read through q
        body.insert(0, "const int8_t *q;")
    return _function(mode, [f"    {line}" for line in body])


def _function(mode: str, body: list[str]) -> str:
    return (f"\nvoid ctxconv_classify_{mode}(const int8_t *input, "
            "int32_t scores[CTXCONV_NUM_CLASSES])\n{\n" + "\n".join(body) + "\n}\n")
