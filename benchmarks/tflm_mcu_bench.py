"""TFLite Micro + CMSIS-NN beside the generated C on the same emulated Cortex-M4.

    python benchmarks/tflm_mcu_bench.py --tflm TFLM_CHECKOUT [EXPORT_DIR ...]  # default: Fashion-MNIST and digits
    python benchmarks/tflm_mcu_bench.py --render                      # markdown from results/tflm_mcu.json only

TFLM_CHECKOUT is a tflite-micro checkout with its third-party code in
``tensorflow/lite/micro/tools/make/downloads/`` (nothing is downloaded). TFLM is built
from it with CMSIS-NN by its own Makefile (``benchmarks/tflm_mcu/build.py``) for
``-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16 -O2``; the harness
(``benchmarks/tflm_mcu/tflm_harness.cc``) runs each export's own ``.tflite`` block files on
QEMU ``mps2-an386`` with the firmware harness's start-up code, semihosting and SysTick
counter. In the same run the export's C library is regenerated (in a copy of the export,
with this checkout's writer and kernels), cross-compiled and run on the same vectors and
board. Measured: instructions per block and per image, RAM (TFLM's arena as
``arena_used_bytes()`` with one shared arena and with one arena per block, static
.data/.bss, the painted stack), flash (the linked ELF), and whether every block output is
the same int8 bytes on the MCU.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a path: the repository

from benchmarks.provenance import ROOT, relative
from benchmarks.report import provenance_line, start, write_section
from benchmarks.tflm_mcu import build as tb

KB = 1024
EXPORTS = ("benchmarks/runs/fashion_mnist/export", "benchmarks/runs/digits/export")
PROFILE = "nrf52840"  # the generated C's image: the firmware section's Cortex-M4 board
TRAILER_WORDS = 5 + 4  # per block: probe, used, arena, shared used, outputs, 4 output sizes
PLATFORM_TRAILER = 12  # calibration ticks (uint32 x 2), stack high-water mark
EMULATED_SECONDS_PER_IMAGE = 60.0


# --------------------------------------------------------------------------- TFLM's output


def tflm_dtype(out_sizes: list[list[int]]) -> np.dtype:
    """One image's record in the harness's output file (layout in tflm_harness.cc)."""
    fields: list[tuple[str, Any, tuple[int, ...]]] = []
    for b, sizes in enumerate(out_sizes):
        fields += [(f"pb_out{b}", np.int8, (sum(sizes),)), (f"pb_invoke{b}", "<u8", ())]
    fields.append(("pb_image", "<u8", ()))
    for b, sizes in enumerate(out_sizes):
        fields += [(f"sh_out{b}", np.int8, (sum(sizes),)), (f"sh_setup{b}", "<u8", ()),
                   (f"sh_invoke{b}", "<u8", ())]
    fields.append(("sh_image", "<u8", ()))
    return np.dtype(fields)


def split_outputs(flat: np.ndarray, names: list[str], sizes: list[int]) -> dict[str, np.ndarray]:
    """(N, sum(sizes)) int8 -> {output name: (N, size)} in the model's output order."""
    edges = np.cumsum([0, *sizes])
    return {n: flat[:, edges[i] : edges[i + 1]] for i, n in enumerate(names)}


def decode_tflm(data: bytes, n: int, names: list[list[str]], out_sizes: list[list[int]]
                ) -> dict[str, Any]:
    """Parse the TFLM harness's output file for ``n`` images of blocks whose outputs are
    ``names`` with ``out_sizes`` bytes (per block, in the model's output order)."""
    rec_t = tflm_dtype(out_sizes)
    blocks = len(out_sizes)
    tail = 4 * (TRAILER_WORDS * blocks + 2) + PLATFORM_TRAILER
    if len(data) != rec_t.itemsize * n + tail:
        raise ValueError(f"TFLM harness output has {len(data)} bytes, expected "
                         f"{rec_t.itemsize * n + tail} for {n} images")
    rec = np.frombuffer(data[: rec_t.itemsize * n], rec_t)
    words = np.frombuffer(data[rec_t.itemsize * n : len(data) - PLATFORM_TRAILER], "<u4")
    per = words[: TRAILER_WORDS * blocks].reshape(blocks, TRAILER_WORDS)
    cal_lo, cal_hi, stack = np.frombuffer(data[-PLATFORM_TRAILER:], "<u4")
    for b, sizes in enumerate(out_sizes):
        got = [int(s) for s in per[b, 5 : 5 + int(per[b, 4])]]
        if got != sizes:
            raise ValueError(f"block {b}: TFLM's outputs have {got} bytes, the export's "
                             f"{sizes}")
    return {
        "per_block": [split_outputs(rec[f"pb_out{b}"], names[b], out_sizes[b])
                      for b in range(blocks)],
        "shared": [split_outputs(rec[f"sh_out{b}"], names[b], out_sizes[b])
                   for b in range(blocks)],
        "invoke_ticks": np.stack([rec[f"pb_invoke{b}"] for b in range(blocks)], 1),
        "image_ticks": rec["pb_image"].copy(),
        "shared_setup_ticks": np.stack([rec[f"sh_setup{b}"] for b in range(blocks)], 1),
        "shared_invoke_ticks": np.stack([rec[f"sh_invoke{b}"] for b in range(blocks)], 1),
        "shared_image_ticks": rec["sh_image"].copy(),
        "probe_bytes": per[:, 0].tolist(), "arena_used_bytes": per[:, 1].tolist(),
        "arena_bytes": per[:, 2].tolist(), "shared_used_bytes": per[:, 3].tolist(),
        "shared_arena_bytes": int(words[-2]), "handoff_bytes": int(words[-1]),
        "calibration_ticks": int(cal_lo) | int(cal_hi) << 32, "stack_used": int(stack),
    }  # fmt: skip


# --------------------------------------------------------------------------- comparison


def median_instructions(ticks: np.ndarray, calibration_ticks: int) -> int:
    from ctxconv.runtimes.firmware.run import ticks_to_instructions

    return round(float(np.median(ticks_to_instructions(ticks, calibration_ticks))))


def ratio(a: float, b: float) -> float | None:
    """a / b, rounded; None where b is 0."""
    return round(a / b, 3) if b else None


def equal_rows(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """How many vectors (rows) are the same bytes, and the largest difference in LSB."""
    a = np.asarray(a, np.int8).reshape(len(a), -1)
    b = np.asarray(b, np.int8).reshape(len(b), -1)
    if a.shape != b.shape:
        return {"vectors": len(a), "equal": 0, "max_diff": None, "bit_exact": False}
    same = int(np.sum(np.all(a == b, axis=1)))
    diff = int(np.max(np.abs(a.astype(np.int16) - b.astype(np.int16)), initial=0))
    return {"vectors": len(a), "equal": same, "max_diff": diff, "bit_exact": same == len(a)}


def compare_outputs(ctx: list[dict[str, np.ndarray]], tflm: list[dict[str, np.ndarray]],
                    ) -> list[dict[str, dict[str, Any]]]:
    """Per block, per output the ctxconv C is compared on: equality with TFLM's."""
    return [{name: equal_rows(c[name], t[name]) for name in c} for c, t in
            zip(ctx, tflm, strict=True)]


def all_exact(rows: list[dict[str, dict[str, Any]]]) -> bool:
    return all(v["bit_exact"] for block in rows for v in block.values())


def ram_figures(tflm: dict[str, Any], image: dict[str, Any]) -> dict[str, int]:
    """TFLM's RAM: the arenas as used, beside the rest of .data/.bss and the stack."""
    arenas = image["pool_bytes"] + image["handoff_bytes"]
    static = image["static_ram_bytes"] - arenas
    stack = tflm["stack_used"]
    shared = max(tflm["shared_used_bytes"])
    per_block = sum(tflm["arena_used_bytes"])
    return {"static_other_bytes": static, "stack_high_water_bytes": stack,
            "shared_arena_used_bytes": shared, "handoff_bytes": image["handoff_bytes"],
            "per_block_arena_used_bytes": per_block,
            "shared_ram_bytes": shared + image["handoff_bytes"] + static + stack,
            "per_block_ram_bytes": per_block + static + stack}


def summarize(ctx: dict[str, Any], tflm: dict[str, Any], image: dict[str, Any],
              names: list[str]) -> dict[str, Any]:
    """The side-by-side figures from one run's raw records (no figure comes from elsewhere)."""
    cal_c, cal_t = ctx["calibration_ticks"], tflm["calibration_ticks"]
    blocks = []
    for b, name in enumerate(names):
        ci = median_instructions(ctx["block_ticks"][b], cal_c)
        ti = median_instructions(tflm["invoke_ticks"][:, b], cal_t)
        blocks.append({
            "name": name, "ctxconv_instructions": ci, "tflm_instructions": ti,
            "tflm_over_ctxconv": ratio(ti, ci),
            "tflm_shared_setup_instructions":
                median_instructions(tflm["shared_setup_ticks"][:, b], cal_t),
            "tflm_arena_used_bytes": tflm["arena_used_bytes"][b],
            "tflm_shared_arena_used_bytes": tflm["shared_used_bytes"][b],
        })  # fmt: skip
    c_image = median_instructions(ctx["image_ticks"], cal_c)
    t_image = median_instructions(tflm["image_ticks"], cal_t)
    t_shared = median_instructions(tflm["shared_image_ticks"], cal_t)
    ram = ram_figures(tflm, image)
    c_ram = ctx["ram_bytes"]
    exact = compare_outputs(ctx["outputs"], tflm["per_block"])
    exact_shared = compare_outputs(ctx["outputs"], tflm["shared"])
    return {
        "blocks": blocks,
        "image": {"ctxconv_instructions": c_image, "ctxconv_mode": ctx["mode"],
                  "tflm_instructions": t_image, "tflm_over_ctxconv": ratio(t_image, c_image),
                  "tflm_shared_instructions": t_shared,
                  "tflm_shared_over_ctxconv": ratio(t_shared, c_image)},
        "ram": {"ctxconv": {"static_bytes": ctx["static_ram_bytes"],
                            "stack_high_water_bytes": ctx["stack_used"],
                            "io_bytes": ctx["io_bytes"], "ram_bytes": c_ram,
                            "elf_data_bss_bytes": ctx["elf_data_bss_bytes"]},
                "tflm": {**ram, "elf_data_bss_bytes": image["static_ram_bytes"]},
                "tflm_shared_over_ctxconv": ratio(ram["shared_ram_bytes"], c_ram),
                "tflm_per_block_over_ctxconv": ratio(ram["per_block_ram_bytes"], c_ram)},
        "flash": {"ctxconv_bytes": ctx["flash_bytes"], "tflm_bytes": image["flash_bytes"],
                  "tflite_bytes": ctx["tflite_bytes"],
                  "tflm_over_ctxconv": ratio(image["flash_bytes"], ctx["flash_bytes"])},
        "bit_exact": {"per_block_arenas": exact, "shared_arena": exact_shared,
                      "tflm_modes_agree": all_exact(compare_outputs(tflm["per_block"],
                                                                    tflm["shared"])),
                      "all": all_exact(exact) and all_exact(exact_shared)},
    }  # fmt: skip


# --------------------------------------------------------------------------- measuring


def run_ctxconv(export_dir: Path, raw: np.ndarray, work: Path) -> dict[str, Any]:
    """The export's C, regenerated in a copy, on the emulated M4: per block and per image."""
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.codegen import write_c_for_export
    from ctxconv.runtimes.firmware.build import build_arm
    from ctxconv.runtimes.firmware.run import run_harness
    from ctxconv.sim.firmware_check import block_shapes
    from ctxconv.sim.profiles import load_profile

    copy = work / "export"
    shutil.copytree(export_dir, copy, ignore=shutil.ignore_patterns("c", ".c.*"))
    write_c_for_export(copy)  # the C of this checkout's writer and kernels
    bundle = load_export(copy)
    profile = load_profile(PROFILE)
    modes = list(bundle.manifest["modes"])
    build_dir = work / "ctxconv_build"
    build_dir.mkdir()
    build = build_arm(copy / "c", build_dir, modes, tb.TARGET, profile)
    got = run_harness(build.elf, raw, build_dir, block_shapes(bundle), bundle.num_classes,
                      modes, True, timeout=60 + EMULATED_SECONDS_PER_IMAGE * len(raw),
                      target=build.target)
    outputs = []
    for b, block in enumerate(bundle.blocks):
        score = "goodness" if any(o["name"] == "goodness" for o in block["outputs"]) else "scores"
        outputs.append({"features": got.features[b][:, 0], score: got.block_scores[b][:, 0]})
    k = bundle.num_classes
    lib_ram = build.library_bytes(kinds="bBdD")
    io_bytes = int(np.prod(bundle.graphs[0].tensors["features_in"].shape)) + 4 * k
    return {"outputs": outputs, "block_ticks": got.block_ticks, "mode": modes[0],
            "image_ticks": got.mode_ticks[modes[0]], "calibration_ticks": got.calibration_ticks,
            "stack_used": got.stack_used, "static_ram_bytes": lib_ram, "io_bytes": io_bytes,
            "ram_bytes": lib_ram + got.stack_used + io_bytes,
            "elf_data_bss_bytes": build.sections.get(".data", 0) + build.sections.get(".bss", 0),
            "flash_bytes": build.flash_bytes, "tflite_bytes": sum(len(t) for t in bundle.tflite),
            "target": build.target.label}


def run_tflm(export_dir: Path, raw: np.ndarray, library: Path, flags: list[str], work: Path
             ) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The export's block files in TFLM on the emulated M4."""
    from ctxconv.blockgraph.bundle import load_export
    from ctxconv.blockgraph.pipeline import BlockPipeline
    from ctxconv.runtimes.firmware.run import run_program

    bundle = load_export(export_dir)
    image = tb.build_harness(bundle, library, flags, work)
    x = BlockPipeline(bundle.manifest, []).quantize_images(raw)
    data = run_program(image.elf, tb.encode_inputs(x), work,
                       60 + 2 * EMULATED_SECONDS_PER_IMAGE * len(raw), tb.TARGET)
    names = [list(g.outputs) for g in bundle.graphs]
    sizes = [[g.tensors[n].nbytes for n in g.outputs] for g in bundle.graphs]
    rec = decode_tflm(data, len(raw), names, sizes)
    facts = {"flash_bytes": image.flash_bytes, "static_ram_bytes": image.static_ram_bytes,
             "pool_bytes": image.symbol_bytes(tb.POOL_SYMBOL),
             "handoff_bytes": image.symbol_bytes(tb.HANDOFF_SYMBOL),
             "elf_sections": {k: v for k, v in image.sections.items()
                              if not k.startswith((".debug", ".comment"))}}
    if not facts["pool_bytes"] or facts["handoff_bytes"] != rec["handoff_bytes"]:
        raise tb.TflmError("the TFLM image's arena pool or hand-off buffer was not found")
    return rec, facts, [g.name for g in bundle.graphs]


def measure_export(export_dir: Path, library: Path, flags: list[str], images: int,
                   work: Path) -> dict[str, Any]:
    from ctxconv.blockgraph.bundle import load_export

    raw, _ = load_export(export_dir).test_vectors(images)
    t0 = time.perf_counter()
    (work / "tflm").mkdir()
    tflm, image, names = run_tflm(export_dir, raw, library, flags, work / "tflm")
    t1 = time.perf_counter()
    ctx = run_ctxconv(export_dir, raw, work)
    t2 = time.perf_counter()
    res = summarize(ctx, tflm, image, names)
    res.update({"export": relative(str(export_dir)), "images": len(raw),
                "target": ctx["target"], "tflm_elf_sections": image["elf_sections"],
                "arena": {k: tflm[k] for k in ("probe_bytes", "arena_used_bytes", "arena_bytes",
                                               "shared_used_bytes", "shared_arena_bytes")},
                "seconds": {"tflm_build_and_run": round(t1 - t0, 1),
                            "ctxconv_generate_build_and_run": round(t2 - t1, 1)}})
    return res


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("exports", nargs="*", default=[str(ROOT / e) for e in EXPORTS],
                        metavar="EXPORT_DIR", help="export folders (default: %(default)s)")
    parser.add_argument("--tflm", help="a tflite-micro checkout with its third-party downloads")
    parser.add_argument("--images", type=int, default=20, help="test vectors per export")
    parser.add_argument("--build-dir", help="keep TFLM's build here (reused by a later run; "
                                            "default: a temporary folder)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs")


def fail(message: str) -> None:
    """A user error: one line on stderr, exit status 2 (as the project's commands do)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def public_command(command: str, paths: dict[str | None, str]) -> str:
    """The command as provenance stores it, with this machine's own paths (the checkout,
    the build folder) replaced by the names the usage line gives them."""
    words = shlex.split(command)
    out = []
    for i, w in enumerate(words):
        flag, eq, value = w.partition("=")
        if eq and flag in ("--tflm", "--build-dir") and value in paths:
            w = f"{flag}={paths[value]}"
        elif i and words[i - 1] in ("--tflm", "--build-dir") and w in paths:
            w = paths[w]
        out.append(w)
    return shlex.join(out)


def main() -> None:
    if (started := start(__doc__, "tflm_mcu", render, add_options)) is None:
        return
    args, stamp = started
    stamp["command"] = public_command(stamp["command"], {args.tflm: "TFLM_CHECKOUT",
                                                         args.build_dir: "BUILD_DIR"})
    try:
        checkout = tb.check_checkout(args.tflm)
    except tb.TflmError as exc:
        fail(str(exc))
    exports = [Path(e) for e in args.exports]
    for e in exports:
        if not (e / "manifest.json").is_file():
            fail(f"{e} is not an export folder (no manifest.json)")
    from ctxconv.runtimes.firmware.targets import FirmwareError
    from ctxconv.runtimes.firmware.toolchain import ToolMissing

    t0 = time.perf_counter()
    results = {}
    with tempfile.TemporaryDirectory(prefix="tflm-mcu-") as tmp:
        build_dir = Path(args.build_dir).resolve() if args.build_dir else Path(tmp) / "tflm"
        try:
            library = tb.build_library(checkout, build_dir, args.jobs)
            flags = tb.library_flags(checkout, build_dir)
            t_lib = time.perf_counter()
            for i, e in enumerate(exports):
                work = Path(tmp) / f"export{i}"
                work.mkdir()
                results[e.parent.name] = measure_export(e, library, flags, args.images, work)
        except (tb.TflmError, FirmwareError, ToolMissing) as exc:
            fail(" | ".join(str(exc).splitlines()[:6]) or type(exc).__name__)
    wall = time.perf_counter() - t0
    res = {"provenance": stamp, "tflm": tb.checkout_facts(checkout),
           "wall_seconds": round(wall, 1), "tflm_library_seconds": round(t_lib - t0, 1),
           "exports": results}
    write_section("tflm_mcu", json.loads(json.dumps(res, default=str)), render(res))
    if not all(r["bit_exact"]["all"] for r in results.values()):
        print("error: TFLM and the generated C differ on the MCU (see the table)",
              file=sys.stderr)
        raise SystemExit(1)


# --------------------------------------------------------------------------- markdown


def yes_no(flag: bool) -> str:
    return "yes" if flag else "**no**"


def exact_cell(rows: dict[str, dict[str, Any]]) -> str:
    return ", ".join(f"{name} {yes_no(v['bit_exact'])} ({v['equal']}/{v['vectors']})"
                     for name, v in rows.items())


def render(res: dict) -> list[str]:
    t = res["tflm"]
    lines = ["## TFLite Micro + CMSIS-NN beside the generated C on the Cortex-M4 "
             "(`benchmarks/tflm_mcu_bench.py`)", "",
             provenance_line(res.get("provenance")), "",
             f"Run time: {res['wall_seconds']:.0f} s, of which {res['tflm_library_seconds']:.0f} s "
             "building TFLM. TFLM built from sources by its own Makefile ("
             + ", ".join(f"`{v}`" for v in tb.MAKE_VARS[:5]) + ", every part at -O2) at "
             f"tflite-micro {t['tflite_micro']}; third-party code as its download scripts pin "
             f"it: CMSIS-NN {t['pins'].get('cmsis_nn', '?')}, CMSIS {t['pins'].get('cmsis', '?')}"
             f", flatbuffers {t['pins'].get('flatbuffers', '?')}. Both run on QEMU `mps2-an386` "
             "with the firmware harness's start-up code, semihosting and SysTick counter "
             "(`-icount shift=0`, instructions, not cycles), the generated C regenerated from "
             "the same export by this commit. Instructions are medians over the vectors; "
             "TFLM per block is `Invoke()` with one arena per block (built once), per image "
             "the input copy, every Invoke and the hand-offs; the generated C per image is "
             "its classify call. TFLM's arenas are `arena_used_bytes()` on the MCU (each "
             "per-block arena sized to its probe, rounded to 16 bytes, and run so); its "
             "static RAM is the ELF's .data + .bss less the arena pool and the hand-off "
             "buffer; the generated C's RAM is the library's static data + stack + I/O, as "
             "in the firmware section. Flash: the linked ELF's "
             + ", ".join(tb.FLASH_SECTIONS) + " (`arm-none-eabi-size`).", ""]
    for name, r in res["exports"].items():
        img, ram, fl = r["image"], r["ram"], r["flash"]
        c, tf = ram["ctxconv"], ram["tflm"]
        lines += [f"### {name} (`{r['export']}`, {r['images']} test vectors, {r['target']})", "",
                  "| block | ctxconv instructions | TFLM + CMSIS-NN instructions | TFLM / ctxconv "
                  "| TFLM arena used (own arena) | TFLM build per block, shared arena "
                  "(instructions) | bit-exact (per-block arenas) | bit-exact (shared arena) |",
                  "|---|---|---|---|---|---|---|---|"]
        for b, pb, sh in zip(r["blocks"], r["bit_exact"]["per_block_arenas"],
                             r["bit_exact"]["shared_arena"], strict=True):
            lines.append(f"| {b['name']} | {b['ctxconv_instructions']:,} | "
                         f"{b['tflm_instructions']:,} | {b['tflm_over_ctxconv']:.3f} | "
                         f"{b['tflm_arena_used_bytes'] / KB:.1f} KB | "
                         f"{b['tflm_shared_setup_instructions']:,} | {exact_cell(pb)} | "
                         f"{exact_cell(sh)} |")
        lines += [f"| **per image** | {img['ctxconv_instructions']:,} ({img['ctxconv_mode']}) | "
                  f"{img['tflm_instructions']:,} (one shared arena, each block built in it: "
                  f"{img['tflm_shared_instructions']:,}) | {img['tflm_over_ctxconv']:.3f} "
                  f"(shared arena: {img['tflm_shared_over_ctxconv']:.3f}) | | | | |", "",
                  "| | ctxconv C | TFLM, one shared arena | TFLM, one arena per block |",
                  "|---|---|---|---|",
                  f"| RAM KB | {c['ram_bytes'] / KB:.1f} = static {c['static_bytes'] / KB:.1f} + "
                  f"stack {c['stack_high_water_bytes'] / KB:.2f} + I/O {c['io_bytes'] / KB:.2f} | "
                  f"{tf['shared_ram_bytes'] / KB:.1f} = arena {tf['shared_arena_used_bytes'] / KB:.1f}"
                  f" + hand-off {tf['handoff_bytes'] / KB:.1f} + static "
                  f"{tf['static_other_bytes'] / KB:.1f} + stack "
                  f"{tf['stack_high_water_bytes'] / KB:.2f} | {tf['per_block_ram_bytes'] / KB:.1f} = "
                  f"arenas {tf['per_block_arena_used_bytes'] / KB:.1f} + static "
                  f"{tf['static_other_bytes'] / KB:.1f} + stack "
                  f"{tf['stack_high_water_bytes'] / KB:.2f} |",
                  f"| RAM / ctxconv | 1 | {ram['tflm_shared_over_ctxconv']:.3f} | "
                  f"{ram['tflm_per_block_over_ctxconv']:.3f} |",
                  f"| flash KB (.tflite {fl['tflite_bytes'] / KB:.1f}) | {fl['ctxconv_bytes'] / KB:.1f}"
                  f" | {fl['tflm_bytes'] / KB:.1f} ({fl['tflm_over_ctxconv']:.3f} ×) | same image |",
                  "",
                  f"Every block output the same int8 bytes on the MCU, ctxconv C and TFLM (both "
                  f"arena layouts): **{yes_no(r['bit_exact']['all'])}**; TFLM's two layouts agree: "
                  f"{yes_no(r['bit_exact']['tflm_modes_agree'])}.", ""]
    return lines


if __name__ == "__main__":
    main()
