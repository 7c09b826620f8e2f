"""Run an exported block pipeline as a microcontroller would, and report on it.

For one MCU profile and inference mode: the memory plan (arena, flash, per block and
for the pipeline, with a fit verdict), MACs and the cost model's latency and energy,
accuracy on the export's test vectors with the chosen backend, TFLM's real minimum arena
(by bisection) beside the planner's figure, and whether the reference kernels are
bit-exact with TFLM on every block.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle, load_export
from ctxconv.blockgraph.pipeline import BlockPipeline, modes_coincide
from ctxconv.memory.c_arena import plan_arena
from ctxconv.memory.tflm import PipelinePlan, plan_block
from ctxconv.progress import ThrottledBar
from ctxconv.runtimes.factory import BACKENDS, make_runners
from ctxconv.runtimes.runners import tflm_min_arena
from ctxconv.sim.firmware_check import firmware_table, run_firmware
from ctxconv.sim.fit import DoesNotFitError, plan_on, problems, require_fit, scratch_bytes
from ctxconv.sim.passes import block_cycles, block_macs, graph_macs, op_runs
from ctxconv.sim.profiles import McuProfile, load_profile
from ctxconv.sim.reference_pass import reference_pass

log = logging.getLogger(__name__)
#: ``firmware``: the export's generated C, built and run on the host and on an emulated MCU
SIM_BACKENDS = (*BACKENDS, "firmware")


@dataclass
class SimOptions:
    mcu: str = "nrf52840"
    mode: str | None = None  # None: onepass when available, else multipass
    backend: str = "reference"
    images: int | None = None  # None: every test vector
    measure_tflm: bool = True  # bisect TFLM's minimum arena per block
    # compared reference vs TFLM; None: every image run (firmware: FIRMWARE_TFLM_IMAGES)
    bit_exact_images: int | None = None
    emulated_images: int = 20  # firmware backend: images run on the emulated MCU
    workers: int | None = None  # processes of the reference pass; None: every core


#: The firmware backend checks the generated C against the reference kernels on every test
#: vector; the reference kernels against TFLM (the reference backend's check on all of
#: them, ~20 ms per image) on this many unless ``bit_exact_images`` says otherwise.
FIRMWARE_TFLM_IMAGES = 1000


def default_tflm_images(opts: SimOptions) -> int:
    """Test vectors compared with TFLM when ``bit_exact_images`` is not given."""
    return FIRMWARE_TFLM_IMAGES if opts.backend == "firmware" else 1 << 62


def _mode(bundle: ExportBundle, mode: str | None) -> str:
    modes = bundle.manifest["modes"]
    if mode is None:
        return "onepass" if "onepass" in modes else "multipass"
    if mode not in modes:
        raise ValueError(f"mode {mode!r} is not available for this export (available: {modes}); "
                         "onepass needs blocks whose output does not depend on the context")
    return mode


def require_int8(bundle: ExportBundle) -> None:
    """Refuse a float export: the memory plan, cost model and bit-exactness are int8's."""
    if not bundle.manifest["int8"]:
        raise ValueError(f"{bundle.path} is a float export: the simulator models int8 "
                         "deployments only; export with ctxconv-export RUN_DIR --int8")


def failed_checks(report: dict[str, Any]) -> list[str]:
    """The checks of ``report`` that failed (empty: every check that ran passed)."""
    out = []
    if report.get("bit_exact_vs_tflm") is False:
        out.append("the reference kernels are not bit-exact with TFLM (max LSB per block "
                   f"{report['max_lsb_vs_tflm']})")
    fw = report.get("firmware")
    if fw is not None:
        if not fw["host"]["bit_exact"]:
            out.append(f"the generated C (host build) is not bit-exact with the reference "
                       f"kernels on {fw['host']['images']} test vectors")
        emu = fw.get("emulated")
        if emu is not None:
            for key, what in (("bit_exact", "the reference kernels"),
                              ("bit_exact_vs_tflm", "TFLM"),
                              ("bit_exact_vs_host", "the host build")):
                if emu.get(key) is False:
                    out.append(f"the generated C on the emulated {emu['target']} is not "
                               f"bit-exact with {what}")
    return out


def memory_report(plan: PipelinePlan, profile: McuProfile) -> dict[str, Any]:
    """The memory part of a report: the plan beside the profile's limits (what
    ``memory_figure`` draws)."""
    exceeded = problems(plan, profile)
    blocks = [{"name": b.name, "arena_bytes": b.arena_bytes, "flash_bytes": b.flash_bytes,
               "activation_bytes": b.head_bytes} for b in plan.blocks]
    return {
        "mcu": profile.name, "fits": not exceeded, "problems": exceeded,
        "arena_bytes": plan.arena_bytes, "scratch_bytes": scratch_bytes(plan),
        "sram_bytes": plan.sram_bytes, "sram_limit_bytes": profile.available_sram_bytes,
        "arena_limit_bytes": profile.arena_limit_bytes,
        "flash_bytes": plan.flash_bytes, "flash_limit_bytes": profile.available_flash_bytes,
        "staging_bytes": plan.staging_bytes, "blocks": blocks,
    }  # fmt: skip



def simulate(export: str | Path | ExportBundle, opts: SimOptions | None = None,
             profile: McuProfile | None = None, cache: dict | None = None) -> dict[str, Any]:
    """The full report for one export, MCU and mode (a JSON-serialisable dict).

    ``cache`` (a dict kept by the caller) reuses what does not depend on the MCU profile
    (accuracy per backend and mode, TFLM's minimum arenas, the bit-exactness check).
    """
    opts = opts or SimOptions()
    cache = {} if cache is None else cache
    if opts.backend not in SIM_BACKENDS:
        raise ValueError(f"unknown backend {opts.backend!r}; choose one of {SIM_BACKENDS}")
    bundle = export if isinstance(export, ExportBundle) else load_export(export)
    require_int8(bundle)
    profile = profile or load_profile(opts.mcu)
    mode = _mode(bundle, opts.mode)
    k = bundle.num_classes
    plan = plan_on(profile, bundle.graphs, k, bundle.tflite)
    memory = memory_report(plan, profile)
    blocks = []
    for i, (graph, block) in enumerate(zip(bundle.graphs, bundle.blocks, strict=True)):
        runs = max(op_runs(bundle.blocks, i, graph, k, mode), default=1)
        cycles = block_cycles(bundle.blocks, i, graph, k, mode, profile)
        energy = profile.energy_mj(cycles)
        row = {
            **memory["blocks"][i], "contextual": block["contextual"], "runs": runs,
            "macs": block_macs(bundle.blocks, i, graph, k, mode),
            "unshared_macs": graph_macs(graph) * runs,
            "latency_ms": 1e3 * profile.seconds(cycles), "energy_mj": energy,
        }  # fmt: skip
        if opts.measure_tflm:  # like for like: the Python TFLM runs the reference kernels
            if ("tflm_min", i) not in cache:
                log.info("%s: bisecting TFLM's minimum arena", graph.name)
                cache[("tflm_min", i)] = tflm_min_arena(bundle.tflite[i])
            row["tflm_min_arena_bytes"] = cache[("tflm_min", i)]
            row["planned_reference_arena_bytes"] = plan_block(graph, bundle.tflite[i]).arena_bytes
            row["planner_over_tflm"] = round(row["planned_reference_arena_bytes"]
                                             / row["tflm_min_arena_bytes"], 4)
        blocks.append(row)
    raw, labels = bundle.test_vectors(opts.images)
    key = ("accuracy", opts.backend, mode, len(labels))
    n_exact = min(len(labels), default_tflm_images(opts) if opts.bit_exact_images is None
                  else opts.bit_exact_images)
    firmware = None
    if opts.backend == "firmware":
        firmware = run_firmware(bundle, profile, plan, raw, labels, opts.emulated_images,
                                cache=cache, workers=opts.workers, tflm_images=n_exact,
                                mode=mode)
        cache[key] = (firmware["host"]["modes"][mode]["accuracy"], float("nan"))
        tflm = firmware["host"]["tflm"]  # the host build's chunks ran TFLM beside the reference
        n_exact = tflm["images"]
        cache.setdefault(("diffs", n_exact, mode), (tflm["max_lsb"], None))
    if ("diffs", n_exact, mode) not in cache:  # one reference pass: accuracy and TFLM check
        log.info("running %d test images through the reference kernels, TFLM checked on %d",
                 len(labels), n_exact)
        t0 = time.perf_counter()
        ref = reference_pass(bundle, raw, mode, n_exact, opts.workers)
        seconds = time.perf_counter() - t0
        cache[("diffs", n_exact, mode)] = (ref.diffs, seconds)
        ref_key = ("accuracy", "reference", mode, len(labels))
        cache.setdefault(ref_key, (float((ref.predictions == labels).mean()) if len(labels)
                                   else float("nan"), seconds))
    if key not in cache:
        log.info("running %d test images (%s, %s backend)", len(labels), mode, opts.backend)
        pipe = BlockPipeline(bundle.manifest, make_runners(bundle, opts.backend))
        t0 = time.perf_counter()
        with ThrottledBar(len(raw), f"test images ({opts.backend})", unit="image") as bar:
            preds = pipe.predict(raw, mode, on_batch=bar.step)
        seconds = time.perf_counter() - t0
        cache[key] = (float((preds == labels).mean()) if len(labels) else float("nan"), seconds)
    accuracy, seconds = cache[key]
    diffs, exact_seconds = cache[("diffs", n_exact, mode)]
    energies = [b["energy_mj"] for b in blocks]
    try:
        require_fit(plan, profile)
        explanation = None
    except DoesNotFitError as exc:  # the per-tensor breakdown, for people
        explanation = str(exc)
    report = {
        "export_dir": str(bundle.path), "mcu": profile.name, "mode": mode,
        "modes_coincide": modes_coincide(bundle.manifest),
        "backend": opts.backend, "images": int(len(labels)), "accuracy": accuracy,
        "export_accuracy": bundle.manifest.get("accuracy", {}).get("int8", {}).get(mode),
        **memory, "explanation": explanation,
        # the one arena of the generated C library, its exact layout (memory.c_arena)
        "c_arena_bytes": plan_arena(bundle.graphs).size,
        "macs": sum(b["macs"] for b in blocks),
        "latency_ms": sum(b["latency_ms"] for b in blocks),
        "energy_mj": None if None in energies else sum(energies),
        "tflm_min_arena_bytes": (max(b["tflm_min_arena_bytes"] for b in blocks)
                                 if opts.measure_tflm else None),
        "planner_never_below_tflm": (all(b["planned_reference_arena_bytes"]
                                         >= b["tflm_min_arena_bytes"] for b in blocks)
                                     if opts.measure_tflm else None),
        "bit_exact_vs_tflm": (all(d == 0 for d in diffs) if diffs else None),
        "max_lsb_vs_tflm": diffs,
        "bit_exact_images": n_exact,
        "test_vectors": (bundle.manifest.get("test_vectors") or {}).get("count", len(labels)),
        "bit_exact_seconds": None if exact_seconds is None else round(exact_seconds, 2),
        "throughput_images_per_s": (len(labels) / seconds) if seconds > 0 else None,
        "profile": {"name": profile.name, "core": profile.core, "clock_hz": profile.clock_hz,
                    "sram_bytes": profile.sram_bytes, "flash_bytes": profile.flash_bytes,
                    "kernel_library": profile.kernel_library},
        "blocks": blocks,
    }  # fmt: skip
    if opts.measure_tflm:
        report["c_arena_over_tflm"] = round(report["c_arena_bytes"]
                                            / report["tflm_min_arena_bytes"], 4)
    if firmware is not None:
        emu = firmware.get("emulated")
        if emu and opts.measure_tflm:
            emu["ram_over_tflm_largest_block"] = round(
                emu["ram_bytes"] / report["tflm_min_arena_bytes"], 4)
        report["firmware"] = firmware
    report["failed_checks"] = failed_checks(report)
    return report


def format_table(report: dict[str, Any]) -> str:
    """The report for people."""
    kb = 1024
    lines = [f"{report['export_dir']} on {report['mcu']} ({report['profile']['core']}, "
             f"{report['profile']['clock_hz'] / 1e6:.0f} MHz, {report['profile']['kernel_library']}"
             f"), mode {report['mode']}"
             f"{' (= multipass, the same computation)' if report.get('modes_coincide') else ''}"
             f", backend {report['backend']}",
             "(arena, flash, latency, energy: modelled for the MCU; TFLM min: measured on the "
             "host's 64-bit TFLM)",
             f"{'block':<8}{'arena KB':>10}{'TFLM min':>10}{'flash KB':>10}"
             f"{'MACs':>12}{'latency ms':>12}{'energy mJ':>11}"]  # fmt: skip
    for b in report["blocks"]:
        tflm = f"{b['tflm_min_arena_bytes'] / kb:.1f}" if "tflm_min_arena_bytes" in b else "-"
        energy = f"{b['energy_mj']:.3f}" if b["energy_mj"] is not None else "-"
        lines.append(f"{b['name']:<8}{b['arena_bytes'] / kb:>10.1f}{tflm:>10}"
                     f"{b['flash_bytes'] / kb:>10.1f}"
                     f"{b['macs']:>12,}{b['latency_ms']:>12.2f}{energy:>11}")
    energy = f"{report['energy_mj']:.3f} mJ" if report["energy_mj"] is not None else "n/a"
    lines += [
        f"pipeline: SRAM {report['sram_bytes'] / kb:.1f} KB of "
        f"{report['sram_limit_bytes'] / kb:.0f}"
        f" KB (arena {report['arena_bytes'] / kb:.1f} KB), flash {report['flash_bytes'] / kb:.1f}"
        f" KB of {report['flash_limit_bytes'] / kb:.0f} KB, {report['macs']:,} MACs, "
        f"{report['latency_ms']:.1f} ms, {energy} per image",
        c_arena_line(report),
        f"accuracy ({report['images']} test images, {report['backend']}): "
        f"{report['accuracy']:.2%}",
        f"bit-exact vs TFLM on {report['bit_exact_images']} of {report['test_vectors']} test "
        f"vectors: {report['bit_exact_vs_tflm']} (max LSB per block {report['max_lsb_vs_tflm']})",
    ]  # fmt: skip
    if "firmware" in report:
        lines.append(firmware_table(report["firmware"]))
    memory = "FITS" if report["fits"] else "DOES NOT FIT: " + "; ".join(report["problems"])
    failed = report.get("failed_checks") or []
    lines.append(f"verdict: CHECK FAILED: {'; '.join(failed)} (memory: {memory})" if failed
                 else f"verdict: {memory}")
    return "\n".join(lines)


def c_arena_line(report: dict[str, Any]) -> str:
    """The generated C library's arena beside the TFLM plan the verdict judges."""
    line = (f"generated C library: one arena of {report['c_arena_bytes'] / 1024:.1f} KB for "
            "every block (its exact layout, as ctxconv-export --format c writes it)")
    if report.get("c_arena_over_tflm") is not None:
        line += f", {report['c_arena_over_tflm']:.3f} x TFLM's measured arena of the largest block"
    return line


def _limit(ax, limit_kb: float, bars_kb: list[float], label: str) -> None:
    """The MCU limit as a line, or, when it dwarfs the bars, as a note above a zoomed axis."""
    top = max(bars_kb, default=0.0)
    if top > 0 and limit_kb > 4 * top:
        ax.set_ylim(0, top * 1.35)
        ax.text(0.5, 0.97, f"{label}: {limit_kb:.0f} KB (off the scale: "
                           f"{100 * top / limit_kb:.0f} % used at most)",
                transform=ax.transAxes, ha="center", va="top", fontsize=7, color="red")
    else:
        ax.axhline(limit_kb, color="red", ls="--", label=f"{label}: {limit_kb:.0f} KB")


def memory_figure(report: dict[str, Any]):
    """Arena and flash per block (bars labelled in KB) against the profile's limits, and
    the whole pipeline's SRAM (arena with its kernel scratch, staging, context and scores):
    the quantity the fit verdict judges."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [b["name"] for b in report["blocks"]]
    kb = 1024
    fig, (ax_s, ax_f) = plt.subplots(1, 2, figsize=(12, 5.2))
    x = np.arange(len(names))
    series = [("block arena alone (TFLM plan)", "arena_bytes"),
              ("TFLM measured minimum", "tflm_min_arena_bytes")]  # fmt: skip
    series = [(label, key) for label, key in series if key in report["blocks"][0]]
    width = 0.8 / len(series)
    sram_kb: list[float] = []
    for j, (label, key) in enumerate(series):
        vals = [b[key] / kb for b in report["blocks"]]
        sram_kb += vals
        bars = ax_s.bar(x + (j - (len(series) - 1) / 2) * width, vals, width, label=label)
        ax_s.bar_label(bars, fmt="%.1f KB", fontsize=6, rotation=90, padding=2)
    # the pipeline: what the verdict compares with the SRAM and arena limits
    scratch = report.get("scratch_bytes", 0) / kb
    arena = report["arena_bytes"] / kb
    rest = (report["sram_bytes"] - report["arena_bytes"]) / kb
    at = len(names)
    ax_s.bar(at, arena - scratch, 0.6, color="C3", label="pipeline arena (shared)")
    ax_s.bar(at, scratch, 0.6, bottom=arena - scratch, color="C3", alpha=0.45, hatch="//",
             label="of which kernel scratch")
    top = ax_s.bar(at, rest, 0.6, bottom=arena, color="gray",
                   label="staging + context + scores")
    ax_s.bar_label(top, labels=[f"{report['sram_bytes'] / kb:.1f} KB"], fontsize=7, padding=2)
    sram_kb.append(report["sram_bytes"] / kb)
    _limit(ax_s, report["sram_limit_bytes"] / kb, sram_kb, f"{report['mcu']} SRAM available")
    arena_limit = report.get("arena_limit_bytes", report["sram_limit_bytes"])
    if arena_limit < report["sram_limit_bytes"]:
        ax_s.axhline(arena_limit / kb, color="darkorange", ls=":",
                     label=f"largest region for the arena: {arena_limit / kb:.0f} KB")
    flash_kb = [b["flash_bytes"] / kb for b in report["blocks"]] + [report["flash_bytes"] / kb]
    bars = ax_f.bar(list(x) + [len(names)], flash_kb, 0.5,
                    color=["C0"] * len(names) + ["gray"], label="block flash / whole pipeline")
    ax_f.bar_label(bars, fmt="%.1f KB", fontsize=7, padding=2)
    _limit(ax_f, report["flash_limit_bytes"] / kb, flash_kb, f"{report['mcu']} flash available")
    for ax, title in ((ax_s, "SRAM per block and for the pipeline (KB)"), (ax_f, "Flash (KB)")):
        ax.set_title(title)
        ax.set_ylabel("KB")
        # below the axes, where it covers no bar
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2,
                  frameon=False)
        ax.grid(axis="y", alpha=0.3)
        ax.margins(y=0.15)
    ax_s.set_xticks(list(x) + [at], names + ["pipeline"])
    ax_f.set_xticks(list(x) + [len(names)], names + ["total"])
    verdict = "fits" if report["fits"] else "does not fit: " + "; ".join(
        p.split(":")[0] for p in report["problems"])
    fig.suptitle(f"{report['mcu']}: {verdict}")
    fig.tight_layout()
    return fig


def plot_memory(report: dict[str, Any], path: str | Path) -> Path:
    """PNG of ``memory_figure``."""
    import matplotlib.pyplot as plt

    fig = memory_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
