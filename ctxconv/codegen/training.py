"""The generated half of on-device training: which blocks learn, their descriptors, sizes.

``ctxconv_train.{h,c}`` (the runtime) train any block through a ``ctxconv_train_block``
descriptor; this module writes, for the export at hand, the descriptors (geometry, the
quantization kept fixed, pointers to the inference parameters a step rewrites, the float32
state as exact hex literals), the ``CTXCONV_TRAINABLE_BLOCKS`` mask with the reason for
every block left out, and the static buffer sizes: the largest over the blocks a build
enables (``CTXCONV_TRAIN_BLOCKS``), so a build pays RAM only for the blocks that learn.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.blockgraph.trainable import scale_of, training_state, untrainable_reason

#: The ops whose parameters a step rewrites (their arrays live in RAM when a block learns).
TRAINED_OPS = ("CONV_2D", "FULLY_CONNECTED")


def train_reasons(manifest: dict[str, Any], graphs: list[BlockGraph]) -> list[str | None]:
    """Per block: None if the C library can train it, else why not."""
    out: list[str | None] = []
    for i, (b, g) in enumerate(zip(manifest["blocks"], graphs, strict=True)):
        reason = untrainable_reason(b, g)
        if reason is None and any(p.get("contextual") for p in manifest["blocks"][:i]):
            reason = "a contextual block runs before it (its input depends on the context)"
        out.append(reason)
    return out


def trainable_mask(reasons: list[str | None]) -> int:
    return sum(1 << i for i, r in enumerate(reasons) if r is None)


def training_record(manifest: dict[str, Any], graphs: list[BlockGraph]) -> dict[str, Any]:
    """The manifest's ``c.training`` entry: what the library can train and why not."""
    reasons = train_reasons(manifest, graphs)
    return {"runtime": "ctxconv_train.h", "trainable_mask": trainable_mask(reasons),
            "blocks": [{"block": i, "trainable": r is None, **({"reason": r} if r else {})}
                       for i, r in enumerate(reasons)]}


def _geometry(graph: BlockGraph) -> dict[str, int]:
    """Sizes of a trainable block, read from its graph."""
    conv = next(op for op in graph.ops if op.kind == "CONV_2D")
    _, k, _, cin = graph.tensors["conv_weight"].shape
    in_shape = graph.tensors["features_in"].shape
    out = graph.tensors[conv.outputs[0]].shape
    fc = next(op for op in graph.ops if op.kind == "FULLY_CONNECTED")
    n_flat = int(graph.tensors[fc.inputs[0]].shape[-1])
    filters = int(out[3])
    grid = int(round((n_flat // filters) ** 0.5))
    return {"in_size": int(in_shape[1]), "in_channels": int(cin),
            "pool": int(in_shape[1]) // int(out[1]), "kernel": int(k), "filters": filters,
            "classes": int(graph.tensors["head_weight"].shape[0]), "grid": grid,
            "k_padded": (k * k * cin + 3) // 4 * 4, "out_size": int(out[1]), "n_flat": n_flat}


def buffer_sizes(graph: BlockGraph) -> dict[str, int]:
    """The step's buffers for one block, per kept sample (``ctxconv_train.c``)."""
    g = _geometry(graph)
    pixels = g["out_size"] ** 2
    return {"POOLED_BYTES": pixels * g["in_channels"], "MASK_BITS": pixels * g["filters"],
            "NFLAT": g["n_flat"], "TAPS": g["kernel"] ** 2 * g["in_channels"],
            "CELLS": g["grid"] ** 2}


def header_section(manifest: dict[str, Any], graphs: list[BlockGraph]) -> str:
    """The training macros of ctxconv_model.h."""
    reasons = train_reasons(manifest, graphs)
    mask = trainable_mask(reasons)
    why = "".join(f" *   block {i} ({g.name}): {r}\n" for i, (g, r)
                  in enumerate(zip(graphs, reasons, strict=True)) if r)
    lines = [
        "/* On-device training (ctxconv_train.h). Define CTXCONV_TRAIN_BLOCKS as the mask of",
        " * the blocks that learn (bit i = block i): their weights and parameters then live in",
        " * RAM (placed by CTXCONV_TRAIN_ATTR); 0 (the default) builds inference only."
        + (" Not\n * trainable:\n" + why if why else ""),
        " */",
        "#ifndef CTXCONV_TRAIN_BLOCKS", "#define CTXCONV_TRAIN_BLOCKS 0u", "#endif",
        f"#define CTXCONV_TRAINABLE_BLOCKS 0x{mask:x}u",
        "#if (CTXCONV_TRAIN_BLOCKS) & ~(CTXCONV_TRAINABLE_BLOCKS)",
        '#error "CTXCONV_TRAIN_BLOCKS names a block this library cannot train '
        '(CTXCONV_TRAINABLE_BLOCKS lists those it can)"',
        "#endif",
        "#ifndef CTXCONV_TRAIN_MAX_BATCH", "#define CTXCONV_TRAIN_MAX_BATCH 8", "#endif",
        "#ifndef CTXCONV_TRAIN_ATTR", "#define CTXCONV_TRAIN_ATTR", "#endif",
        "/* per kept sample, the largest over the blocks built trainable */",
        "#define CTXCONV_TRAIN_IF(i, n) ((((CTXCONV_TRAIN_BLOCKS) >> (i)) & 1u) ? (n) : 1)",
        "#define CTXCONV_TRAIN_MAX2(a, b) ((a) > (b) ? (a) : (b))",
    ]
    sizes = {i: buffer_sizes(g) for i, (g, r) in enumerate(zip(graphs, reasons, strict=True))
             if r is None}
    for key in ("POOLED_BYTES", "MASK_BITS", "NFLAT", "TAPS", "CELLS"):
        expr = "1"
        for i, s in sizes.items():
            term = f"CTXCONV_TRAIN_IF({i}, {s[key]})"
            expr = term if expr == "1" else f"CTXCONV_TRAIN_MAX2({expr}, {term})"
        lines.append(f"#define CTXCONV_TRAIN_MAX_{key} {expr}")
    return "\n".join(lines) + "\n"


def param_macros(index: int, name: str) -> str:
    """The storage of a trainable block's parameters: RAM when built trainable, else flash."""
    p = name.upper()
    return (f"#if (CTXCONV_TRAIN_BLOCKS >> {index}) & 1u /* {name} learns: RAM */\n"
            f"#define {p}_PARAM static\n#define {p}_ATTR CTXCONV_TRAIN_ATTR\n#else\n"
            f"#define {p}_PARAM static const\n#define {p}_ATTR CTXCONV_WEIGHTS_ATTR\n"
            "#endif\n")


def _floats(name: str, values: np.ndarray) -> str:
    v = np.asarray(values, np.float32)
    if not np.isfinite(v).all():
        raise ValueError(f"{name} has a non-finite value")
    items = [f"{float(x).hex()}f" for x in v]
    body = ",\n    ".join(", ".join(items[i:i + 6]) for i in range(0, len(items), 6))
    return f"static float {name}[{len(items)}] CTXCONV_TRAIN_ATTR = {{\n    {body}\n}};\n"


def descriptor(index: int, graph: BlockGraph, conv_op: int, fc_op: int) -> str:
    """The block's float32 state and its ``ctxconv_train_block``, under its build switch."""
    g, st, name = _geometry(graph), training_state(graph), graph.name
    conv = graph.ops[conv_op]
    fc = graph.ops[fc_op]
    grid_t = graph.tensors[fc.inputs[0]]
    fields = {k: g[k] for k in ("in_size", "in_channels", "pool", "kernel", "filters",
                                 "classes", "grid", "k_padded")}
    scales = {"in_scale": scale_of(graph, "features_in"),
              "in_zero_point": int(graph.tensors["features_in"].quant.zero_point[0]),
              "out_scale": scale_of(graph, conv.outputs[0]),
              "grid_scale": scale_of(graph, fc.inputs[0]),
              "grid_zero_point": int(grid_t.quant.zero_point[0]),
              "score_scale": scale_of(graph, fc.outputs[0])}
    items = [f"    .{k} = {v}," for k, v in fields.items()]
    items += [f"    .{k} = {v if isinstance(v, int) else float(v).hex() + 'f'},"
              for k, v in scales.items()]
    c, h = f"{name}_op{conv_op}", f"{name}_op{fc_op}"
    items += [f"    .conv_weights = {c}_weights, .conv_bias = {c}_bias,",
              f"    .conv_mult = {c}_mult, .conv_shift = {c}_shift,",
              f"    .head_weights = {h}_weights, .head_bias = {h}_bias,",
              f"    .head_mult = {h}_mult, .head_shift = {h}_shift,",
              f"    .conv_s = {name}_train_conv_s, .conv_b = {name}_train_conv_b,",
              f"    .head_s = {name}_train_head_s, .head_b = {name}_train_head_b,"]
    state = "".join(_floats(f"{name}_train_{k}", st[k]) for k in ("conv_s", "conv_b",
                                                                  "head_s", "head_b"))
    return (f"#if (CTXCONV_TRAIN_BLOCKS >> {index}) & 1u\n{state}"
            f"static const ctxconv_train_block {name}_train = {{\n" + "\n".join(items)
            + "\n};\n#endif\n")


def table(graphs: list[BlockGraph], reasons: list[str | None]) -> str:
    """``ctxconv_train_blocks``: the descriptors of the blocks built trainable."""
    entries = "".join(f"#if (CTXCONV_TRAIN_BLOCKS >> {i}) & 1u\n    [{i}] = &{g.name}_train,\n"
                      "#endif\n" for i, (g, r) in enumerate(zip(graphs, reasons, strict=True))
                      if r is None)
    return ("const ctxconv_train_block *const ctxconv_train_blocks[CTXCONV_NUM_BLOCKS] = {\n"
            f"{entries}}};\n")
