"""MODEL_CARD.md of an export: data, model, accuracy, sizes, MCU fit, how it was made.

Every figure comes from the export itself (its manifest, files and block graphs) or is
computed here from them with the simulator's planner; what is modelled says so.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.sim.fit import fits, plan_on, problems
from ctxconv.sim.passes import block_cycles
from ctxconv.sim.profiles import list_profiles, load_profile

CARD_NAME = "MODEL_CARD.md"
KB = 1024


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f} %"


def _fit_rows(manifest: dict[str, Any], graphs: list[BlockGraph], tflite: list[bytes]
              ) -> list[str]:
    """One row per known MCU profile: planned SRAM and flash against what the profile leaves
    the model, the computed verdict, the modelled latency of one image in the export's
    default mode (each op as often as that mode runs it)."""
    k = int(manifest["dataset"]["num_classes"])
    mode = manifest["modes"][0]
    rows = []
    for name in list_profiles():
        profile = load_profile(name)
        plan = plan_on(profile, graphs, k, tflite)
        cycles = sum(block_cycles(manifest["blocks"], i, g, k, mode, profile)
                     for i, g in enumerate(graphs))
        verdict = "yes" if fits(plan, profile) else "NO: " + "; ".join(
            p.split(":")[0] for p in problems(plan, profile))
        rows.append(f"| {name} | {plan.sram_bytes / KB:.1f} "
                    f"({profile.available_sram_bytes / KB:.0f}) | {plan.flash_bytes / KB:.1f} "
                    f"({profile.available_flash_bytes / KB:.0f}) | "
                    f"{profile.seconds(cycles) * 1e3:.1f} | {verdict} |")
    return rows


def model_card(manifest: dict[str, Any], graphs: list[BlockGraph], export_dir: Path,
               run_dir: Path) -> str:
    """The card's markdown for the export being written in ``export_dir``."""
    ds, blocks = manifest["dataset"], manifest["blocks"]
    acc = manifest.get("accuracy", {})
    int8 = manifest["int8"]
    modes = manifest["modes"]
    files = {p.name: p.stat().st_size for p in export_dir.iterdir() if p.is_file()}
    tflite = [(export_dir / b["files"]["tflite"]).read_bytes() for b in blocks
              if b["files"].get("tflite")]
    arch = "; ".join(f"{b['name']}: conv {b['kernel']}x{b['kernel']} -> {b['filters']}"
                     f"{', contextual' if b['contextual'] else ''}"
                     f"{', scored' if b['score_block'] else ''}" for b in blocks)
    made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(manifest["created_unix"]))
    lines = [
        f"# Model card: {ds['name']}, {len(blocks)} contextual-convolution blocks",
        "",
        "Written by `ctxconv-export` from this directory's own files; accuracy on the "
        "export's test vectors, measured once by the export.",
        "",
        "## Data",
        "",
        f"- Dataset: {ds['name']}, {ds['num_classes']} classes "
        f"({', '.join(ds['class_names'])}); input {ds['image_size']} x {ds['image_size']} x "
        f"{ds['in_channels']}, raw pixels scaled by {manifest['input']['pixel_scale']:.6g}, then "
        f"normalised with mean {manifest['input']['mean']} and std {manifest['input']['std']}.",
        f"- Test vectors: {manifest['test_vectors']['count']} images of the test split "
        "(`test_vectors.npz`).",
    ]
    if int8:
        cal = manifest["quantization"]["calibration"]
        lines.append(f"- Calibration: {cal['samples']} images of the training split "
                     f"({cal['method']}), kept as `train_vectors.npz` for on-device learning.")
    lines += [
        "",
        "## Model",
        "",
        "- Forward-only, block-wise trained: each block learned alone from positive (image + "
        "its true label as a one-hot context) and negative (image + a wrong label) pairs; "
        "no gradient crosses blocks.",
        f"- Blocks: {arch}. Class scores: the goodness of the scored blocks summed; modes "
        f"{', '.join(modes)}.",
        f"- Parameters {sum(b['params'] for b in blocks):,}; MACs per image (one pass per "
        f"block) {sum(b['macs'] for b in blocks):,}.",
        "",
        "## Accuracy (test vectors)",
        "",
        "| mode | float (torch) | " + ("int8 (exported, onnxruntime)" if int8 else
                                      "exported float (onnxruntime)") + " |",
        "|---|---|---|",
        *(f"| {m} | {_pct(acc.get('float', {}).get(m))} | "
          f"{_pct(acc.get('int8' if int8 else 'exported_float', {}).get(m))} |" for m in modes),
        "",
    ]
    agreement = manifest.get("agreement")
    if agreement:
        worst = {rt: max(b[rt]["max_diff"] for b in agreement["blocks"] if rt in b)
                 for rt in ("tflm", "litert", "onnxruntime")
                 if any(rt in b for b in agreement["blocks"])}
        lines += [f"Runtimes against {agreement['reference']} on {agreement['samples']} test "
                  "images, largest difference of any block output in int8 steps: "
                  + ", ".join(f"{rt} {v}" for rt, v in worst.items())
                  + f"; verification {'passed' if agreement['passed'] else 'FAILED'}.", ""]
    lines += [
        "## Sizes",
        "",
        *(f"- `{n}`: {files[n] / KB:.1f} KB" for n in sorted(files) if n.endswith(
            (".tflite", ".onnx"))),
    ]
    c = manifest.get("c")
    if c:
        lines.append(f"- C library (`c/`): one static arena of {c['arena_bytes']:,} bytes; "
                     "weights in flash as `const` arrays.")
    lines.append("")
    if int8 and tflite:
        lines += [
            "## Microcontrollers (planned, not measured)",
            "",
            "The simulator's plan of the TFLM deployment (`ctxconv-sim EXPORT --mcu NAME`): "
            "SRAM and flash against each profile's limits, the verdict computed from them, "
            "latency modelled from the profile's cycle model. Measured on an emulated core: "
            "`ctxconv-sim EXPORT --backend firmware --mcu NAME`.",
            "",
            f"| MCU | SRAM KB (available) | flash KB (available) | modelled ms / image "
            f"({manifest['modes'][0]}) | fits |",
            "|---|---|---|---|---|",
            *_fit_rows(manifest, graphs, tflite),
            "",
        ]
    lines += [
        "## How it was produced",
        "",
        f"- `ctxconv-export {run_dir.name}{' --int8' if int8 else ''}` at {made}, "
        f"ctxconv {manifest.get('version', _version())}, {manifest['export_seconds']} s.",
        f"- The run: `{run_dir.name}/config.yaml` (every setting and the seed), its training "
        f"{'finished' if manifest['run'].get('finished') else 'NOT finished'}.",
        "- Files are sealed by sha256 in `manifest.json`; a changed file is refused.",
        "",
    ]
    return "\n".join(lines)


def _version() -> str:
    import ctxconv

    return ctxconv.__version__
