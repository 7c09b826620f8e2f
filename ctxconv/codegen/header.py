"""ctxconv_model.h of one export: identity, placement hooks, sizes, block table and the API,
each entry point with what it reads and overwrites."""

from __future__ import annotations

import hashlib
import textwrap
from typing import Any

import numpy as np

import ctxconv
from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.codegen.sources import BLOCK_FIELDS, block_table, c_string, input_table
from ctxconv.codegen.training import header_section
from ctxconv.memory.c_arena import ArenaLayout

#: Stack the library needs at most (bytes), on top of the caller's frame: its deepest call
#: chain (classify -> block -> kernel) keeps a few dozen words; every buffer is static.
#: ``ctxconv-sim --backend firmware`` measures the high-water mark on an emulated Cortex-M4
#: (tests check the measurement, harness included, stays under this).
STACK_BYTES = 1024


def model_digest(tflite: list[bytes]) -> str:
    """sha256 of the block .tflite files concatenated in block order."""
    h = hashlib.sha256()
    for data in tflite:
        h.update(data)
    return h.hexdigest()


def digest_command(manifest: dict[str, Any]) -> str:
    """The shell command that recomputes ``CTXCONV_MODEL_SHA256`` from the export's files."""
    files = " ".join(b["files"].get("tflite", f"{b['name']}.tflite") for b in manifest["blocks"])
    return f"cat {files} | sha256sum"


def digest_note(manifest: dict[str, Any]) -> str:
    """What ``CTXCONV_MODEL_SHA256`` is a digest of (README.md)."""
    return f"sha256 of the block .tflite files in block order (`{digest_command(manifest)}`)"


def pixel_range(manifest: dict[str, Any]) -> tuple[int, int | None]:
    """The model's raw pixel range (0..top, from the manifest's ``pixel_scale``) and the first
    raw value at which block 0's int8 input saturates in some channel (None: never)."""
    top = min(255, int(round(1.0 / float(manifest["input"]["pixel_scale"]))))
    table = input_table(manifest)  # (C, 256)
    hits = np.nonzero((table == 127).any(axis=0))[0]
    return top, int(hits[0]) if hits.size else None


def pixel_note(manifest: dict[str, Any]) -> str:
    """One sentence on the input pixel range (used by the header and README.md)."""
    top, sat = pixel_range(manifest)
    scale = float(manifest["input"]["pixel_scale"])
    text = (f"uint8 raw pixels 0..{top} (pixel_scale {scale:.6g}: the range the model was "
            "trained on)")
    if sat is not None and sat < 255:
        text += (f"; from {sat} up, block 0's int8 input saturates at 127, so pixels of "
                 f"another range (e.g. 0..255) must be rescaled to 0..{top} first")
    return text + "."


def _comment(lines: list[str], width: int = 92) -> str:
    """A C block comment of ``lines``, each wrapped (continuations indented two more)."""
    out = []
    for ln in lines:
        pad = " " * (len(ln) - len(ln.lstrip()))
        out += textwrap.wrap(ln, width, subsequent_indent=pad + "  ", break_long_words=False,
                             break_on_hyphens=False) or [""]
    return "/*\n" + "".join(f" * {ln}".rstrip() + "\n" for ln in out) + " */\n"


def _mode_lines(manifest: dict[str, Any], graphs: list[BlockGraph]) -> list[str]:
    flags = [bool(b["contextual"]) for b in manifest["blocks"]]
    lines = []
    for m in manifest["modes"]:
        if m == "onepass" or not any(flags):
            what = ("every block runs once; each block's head gives its scores under all "
                    "classes" + ("" if m == "onepass" else
                                 " (no block reads the context: onepass's computation)"))
        else:
            f = flags.index(True)
            what = (f"the blocks before {graphs[f].name} run once; {graphs[f].name}'s "
                    "context-free ops run once, then per candidate class k (one-hot context "
                    f"k) its context ops and every later block: {len(flags) - f} block runs "
                    "x CTXCONV_NUM_CLASSES")
        lines.append(f"ctxconv_classify_{m}: {what}.")
    lines.append(f"ctxconv_classify: the export's default mode, {manifest['modes'][0]}.")
    return lines


def _block_lines(manifest: dict[str, Any], graphs: list[BlockGraph],
                 rows: list[dict[str, int]]) -> list[str]:
    lines = []
    for i, (g, row) in enumerate(zip(graphs, rows, strict=True)):
        shape = tuple(g.tensors["features"].shape)
        ctx = ", contextual" if row["contextual"] else ""
        use = (f"scores weighted {row['score_weight']}" if row["score_weight"]
               else "score weight 0: ctxconv_classify skips its head (ctxconv_run_block "
                    "still computes its scores)")
        lines.append(f"  {i} {g.name}: features {shape}{ctx}; {use}.")
    return lines


def doc_lines(manifest: dict[str, Any], graphs: list[BlockGraph], layout: ArenaLayout,
              digest: str) -> list[str]:
    """The header's leading comment (after the SPDX line)."""
    ds = manifest["dataset"]
    rows = block_table(manifest, graphs, layout)
    return [
        f"ctxconv C library: {ds['name']}, {len(graphs)} int8 blocks, "
        f"{ds['num_classes']} classes.",
        f"Generated by ctxconv-export {ctxconv.__version__}; do not edit, regenerate with",
        "`ctxconv-export EXPORT_DIR --format c`.",
        "Model: CTXCONV_MODEL_SHA256 = sha256 of the block .tflite files in block order:",
        f"  {digest_command(manifest)}",
        "",
        "Modes:", *(f"  {ln}" for ln in _mode_lines(manifest, graphs)),
        "",
        f"Input: {pixel_note(manifest)}",
        "",
        f"Memory: one static arena of CTXCONV_ARENA_BYTES ({layout.size}); weights in "
        "const arrays.",
        f"Stack: at most CTXCONV_STACK_BYTES ({STACK_BYTES}) beyond the caller's frame (its",
        "high-water mark is measured by `ctxconv-sim EXPORT_DIR --backend firmware`).",
        "Placement: define CTXCONV_WEIGHTS_ATTR (every weight and constant array) and",
        "CTXCONV_ARENA_ATTR (the arena) to place them, e.g.",
        "-DCTXCONV_WEIGHTS_ATTR='__attribute__((section(\".qspi\")))'. Both default to empty.",
        "",
        "Not reentrant: one arena, one inference at a time. Every entry point but",
        "ctxconv_quantize_image and ctxconv_argmax overwrites the arena: the input slot is",
        "scratch once block 0 has run, and a block's features live only until the next",
        "block runs.",
        "",
        "Blocks (ctxconv_blocks[i]):", *_block_lines(manifest, graphs, rows),
    ]


def _api(modes: list[str]) -> str:
    protos = "".join(
        f"void ctxconv_classify_{m}(const int8_t *input, int32_t scores[CTXCONV_NUM_CLASSES]);\n"
        for m in modes)
    return f"""/* The arena slot of block 0's int8 input (CTXCONV_INPUT_BYTES): quantize into it to
 * classify without a copy. Overwritten (scratch) as soon as block 0 runs. */
int8_t *ctxconv_input_buffer(void);
/* Reads CTXCONV_INPUT_BYTES raw pixels (H x W x C, uint8, as the dataset stores them; see
 * Input above), writes block 0's int8 input to `input`. Touches nothing else. */
void ctxconv_quantize_image(const uint8_t *pixels, int8_t *input);
/* Runs block `index` on the arena. Reads its input in place: the input slot for block 0,
 * block index-1's features otherwise, so blocks must run in order 0, 1, ... (each right
 * after the one before it). `context`: the one-hot int8 context (CTXCONV_NUM_CLASSES) of a
 * contextual block, NULL otherwise. Overwrites arena buffers of earlier blocks (the input
 * slot included). Returns its int8 goodness output (ctxconv_blocks[index].score_bytes values,
 * in the arena: valid until the next block runs); NULL for a bad index. */
const int8_t *ctxconv_run_block(int32_t index, const int8_t *context);
/* Runs context-free block `index` for its features only (no head), in place as
 * ctxconv_run_block does. Returns 0, or -1 for a bad index or a contextual block. */
int32_t ctxconv_run_features(int32_t index);
/* Block `index`'s int8 output features (ctxconv_blocks[index].features_bytes) in the arena:
 * valid only until the next block runs; NULL for a bad index. Runs nothing. */
const int8_t *ctxconv_block_features(int32_t index);
/* Class scores (int32, one fixed-point scale for all blocks) of an int8 input. Reads
 * CTXCONV_INPUT_BYTES from `input` (copied into the input slot unless it is
 * ctxconv_input_buffer()); writes all CTXCONV_NUM_CLASSES scores; overwrites the whole
 * arena, the input slot included. */
{protos}void ctxconv_classify(const int8_t *input, int32_t scores[CTXCONV_NUM_CLASSES]);
/* Index of the largest score (the first one on ties). Reads `scores` only. */
int32_t ctxconv_argmax(const int32_t scores[CTXCONV_NUM_CLASSES]);
"""


def _block_struct() -> str:
    fields = "".join(f"    /* {text} */\n    int32_t {name};\n" for name, text in BLOCK_FIELDS)
    return f"typedef struct {{\n{fields}}} ctxconv_block_info;\n"


def header(manifest: dict[str, Any], graphs: list[BlockGraph], layout: ArenaLayout,
           digest: str) -> str:
    """ctxconv_model.h: identity, placement hooks, sizes, block table and the API."""
    k = int(manifest["dataset"]["num_classes"])
    _, h, w, c = graphs[0].tensors["features_in"].shape
    ctx = manifest["context"]
    names = ", ".join(c_string(str(n)) for n in manifest["dataset"]["class_names"])
    return f"""/* SPDX-License-Identifier: Apache-2.0 */
{_comment(doc_lines(manifest, graphs, layout, digest))}#ifndef CTXCONV_MODEL_H
#define CTXCONV_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define CTXCONV_VERSION {c_string(ctxconv.__version__)}
#define CTXCONV_MODEL_SHA256 {c_string(digest)}

#ifndef CTXCONV_WEIGHTS_ATTR
#define CTXCONV_WEIGHTS_ATTR
#endif
#ifndef CTXCONV_ARENA_ATTR
#define CTXCONV_ARENA_ATTR
#endif

#define CTXCONV_NUM_CLASSES {k}
#define CTXCONV_NUM_BLOCKS {len(graphs)}
#define CTXCONV_INPUT_H {h}
#define CTXCONV_INPUT_W {w}
#define CTXCONV_INPUT_C {c}
#define CTXCONV_INPUT_BYTES {h * w * c}
#define CTXCONV_ARENA_BYTES {layout.size}
#define CTXCONV_STACK_BYTES {STACK_BYTES}
#define CTXCONV_CONTEXT_ON {int(ctx['on'])}
#define CTXCONV_CONTEXT_OFF {int(ctx['off'])}
#define CTXCONV_CLASS_NAMES {{{names}}}

{header_section(manifest, graphs)}
{_block_struct()}
extern const ctxconv_block_info ctxconv_blocks[CTXCONV_NUM_BLOCKS];

{_api(manifest["modes"])}
#ifdef __cplusplus
}}
#endif

#endif /* CTXCONV_MODEL_H */
"""
