"""The generated C, built and run, against the simulator's reference kernels.

``run_firmware`` builds the export's C library with the test harness for this machine
(every test vector) and, where the MCU's core is emulated, for the Cortex-M under QEMU
(the first few vectors), and reports bit-exactness per block output and per class score,
top-1, and what was measured on the binary (flash, static RAM, stack, instructions) beside
the simulator's modelled figures.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle
from ctxconv.blockgraph.manifest import C_DIR
from ctxconv.blockgraph.pipeline import BlockPipeline, modes_coincide, one_hot_int8, score_output
from ctxconv.memory.tflm import PipelinePlan
from ctxconv.progress import ThrottledBar
from ctxconv.runtimes.factory import make_runners
from ctxconv.runtimes.firmware.build import (
    ArmBuild,
    FirmwareDoesNotFit,
    build_arm,
    build_host,
)
from ctxconv.runtimes.firmware.cycles import library_cycle_estimate
from ctxconv.runtimes.firmware.run import (
    BlockShape,
    HarnessOutputs,
    concat_outputs,
    run_harness,
)
from ctxconv.runtimes.firmware.targets import FirmwareError, target_for
from ctxconv.sim.cost import estimate_latency
from ctxconv.sim.passes import pipeline_macs
from ctxconv.sim.profiles import McuProfile
from ctxconv.sim.reference_pass import Recorder
from ctxconv.sim.shards import Progress, map_forked, shard_bounds
from ctxconv.workdirs import work_directory

log = logging.getLogger(__name__)
# time limits: generous, never unbounded
START_SECONDS, EMULATOR_START_SECONDS = 60.0, 60.0
HOST_SECONDS_PER_IMAGE, EMULATED_SECONDS_PER_IMAGE = 0.5, 30.0
HOST_CHUNK = 500  # host build: images per harness run (its per-block output file stays small)
#: the host build checks every test vector: the same C, optimised for this machine's CPU
HOST_OPTIMIZE = ("-O3", "-march=native")


class Reference:
    """A backend's outputs for the same images, in the harness's layout (the reference
    kernels by default; ``tflm`` for the real TFLite Micro interpreter).

    Given ``tflm`` runners, every block call is also run by TFLM on the same inputs and the
    largest difference per block kept in ``tflm_diffs`` (LSB).
    """

    def __init__(self, bundle: ExportBundle, raw: np.ndarray,
                 backend: str = "reference", tflm: list | None = None) -> None:
        self.tflm_diffs = [0] * len(bundle.blocks)
        runners = [Recorder(r, t, self.tflm_diffs, i, check=t is not None)
                   for i, (r, t) in enumerate(zip(make_runners(bundle, backend),
                                                  tflm or [None] * len(bundle.blocks),
                                                  strict=True))]
        pipe = BlockPipeline(bundle.manifest, runners)  # type: ignore[arg-type]
        k, n = bundle.num_classes, len(raw)
        x = pipe.quantize_images(raw)
        modes = bundle.manifest["modes"]
        self.features: list[np.ndarray] = []
        self.block_scores: list[np.ndarray] = []
        if not any(b["contextual"] for b in bundle.blocks):  # one pass: each block runs once
            self.scores = dict.fromkeys(modes, pipe.score_sums(x, modes[0]))
            for r, block in zip(runners, bundle.blocks, strict=True):
                self._keep([r.last], block, n)
            return
        if modes_coincide(bundle.manifest):  # one computation: run it once
            self.scores = dict.fromkeys(modes, pipe.score_sums(x, modes[0]))
        else:
            self.scores = {m: pipe.score_sums(x, m) for m in modes}
        for i, block in enumerate(bundle.blocks):
            contexts = [one_hot_int8(c, k, n) for c in range(k)] if block["contextual"] else [None]
            outs = [pipe.block_outputs(i, x, ctx) for ctx in contexts]
            self._keep(outs, block, n)
            x = outs[-1]["features"]

    def _keep(self, outs: list[dict[str, np.ndarray]], block: dict[str, Any], n: int) -> None:
        """One block's outputs, one per pass (context), in the harness's layout."""
        self.features.append(np.stack([o["features"].reshape(n, -1) for o in outs], 1))
        name = score_output(block)
        self.block_scores.append(np.stack([o[name].reshape(n, -1) for o in outs], 1))


def _equal_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of images (axis 0) whose arrays are identical."""
    if len(a) == 0:
        return float("nan")
    same = (a.reshape(len(a), -1) == b.reshape(len(b), -1)).all(axis=1)
    return float(same.mean())


def compare(got: HarnessOutputs, ref: Reference, labels: np.ndarray) -> dict[str, Any]:
    """Per block and per mode: fraction of images bit-identical; top-1 and accuracy."""
    blocks = [{"features_equal": _equal_fraction(f, rf), "scores_equal": _equal_fraction(s, rs)}
              for f, rf, s, rs in zip(got.features, ref.features, got.block_scores,
                                      ref.block_scores, strict=True)]
    modes = {}
    for m, scores in got.scores.items():
        top1 = scores.argmax(1)
        modes[m] = {"images": int(len(labels)),
                    "scores_equal": _equal_fraction(scores, ref.scores[m]),
                    "top1_equal": float((top1 == ref.scores[m].argmax(1)).mean()),
                    "accuracy": float((top1 == labels).mean())}
    exact = all(v == 1.0 for b in blocks for v in b.values()) and all(
        v["scores_equal"] == 1.0 and v["top1_equal"] == 1.0 for v in modes.values())
    return {"images": int(len(labels)), "bit_exact": exact, "blocks": blocks, "modes": modes}


def block_shapes(bundle: ExportBundle) -> list[BlockShape]:
    """What the harness writes per block of ``bundle`` (passes, feature and goodness bytes)."""
    return [BlockShape(bundle.num_classes if b["contextual"] else 1,
                       bundle.graphs[i].tensors["features"].nbytes,
                       bundle.graphs[i].tensors[score_output(b)].nbytes)
            for i, b in enumerate(bundle.blocks)]


def arena_table(bundle: ExportBundle) -> str:
    """The generated library's static arena, buffer by buffer (from the manifest)."""
    c = bundle.manifest.get("c") or {}
    rows = c.get("arena", [])
    lines = [f"C library arena: {c.get('arena_bytes', '?')} B (+ stack and I/O buffers)",
             f"  {'buffer':<28}{'offset':>10}{'bytes':>10}"]
    lines += [f"  {r['buffer']:<28}{r['offset']:>10}{r['bytes']:>10}" for r in rows]
    return "\n".join(lines)


def c_dir_of(bundle: ExportBundle) -> Path:
    c_dir = bundle.path / C_DIR
    if not (c_dir / "ctxconv_model.c").exists():
        raise FirmwareError(f"{bundle.path} has no C library ({C_DIR}/): generate it with "
                            f"`ctxconv-export {bundle.path} --format c`")
    return c_dir


def _measured(build: ArmBuild, got: HarnessOutputs, bundle: ExportBundle, plan: PipelinePlan,
              profile: McuProfile) -> dict[str, Any]:
    """Flash, RAM, stack and instructions measured on the binary, beside the model."""
    k = bundle.num_classes
    blocks = []
    for i, (graph, block, bplan) in enumerate(zip(bundle.graphs, bundle.blocks, plan.blocks,
                                                  strict=True)):
        runs = k if block["contextual"] else 1
        instr = float(np.median(got.instructions(got.block_ticks[i])))
        macs = int(block["macs"]) * runs
        modelled = estimate_latency(graph, profile).seconds * profile.clock_hz * runs
        flash = build.library_bytes(f"{graph.name}_")
        blocks.append({
            "name": graph.name, "flash_bytes": flash, "modelled_flash_bytes": bplan.flash_bytes,
            "flash_measured_over_modelled": round(flash / bplan.flash_bytes, 4),
            "instructions": round(instr), "macs": macs,
            "instructions_per_mac": round(instr / macs, 3) if macs else None,
            "modelled_cycles": round(modelled),
            "instructions_over_modelled_cycles": round(instr / modelled, 4),
        })  # fmt: skip
    lib_ram = build.library_bytes(kinds="bBdD")
    io_bytes = int(np.prod(bundle.graphs[0].tensors["features_in"].shape)) + 4 * k
    modes = {m: round(float(np.median(got.instructions(t)))) for m, t in got.mode_ticks.items()}
    macs = sum(b["macs"] for b in blocks)
    # what the pipeline executes per image in each mode (multipass: later blocks per class)
    mode_macs = {m: pipeline_macs(bundle.blocks, bundle.graphs, k, m) for m in modes}
    return {
        "target": build.target.label, "kernels": build.target.kernels,
        "flash_bytes": build.flash_bytes, "library_flash_bytes": build.library_bytes(),
        "kernel_code_bytes": build.library_bytes("ctxconv_", kinds="tT"),
        "tflite_bytes": sum(len(t) for t in bundle.tflite),
        "static_ram_bytes": lib_ram, "stack_high_water_bytes": got.stack_used,
        "io_buffer_bytes": io_bytes, "ram_bytes": lib_ram + got.stack_used + io_bytes,
        "modelled_sram_bytes": plan.sram_bytes,
        "ram_measured_over_modelled": round((lib_ram + got.stack_used + io_bytes)
                                            / plan.sram_bytes, 4),
        "elf_sections": build.sections, "blocks": blocks,
        "instructions_per_image": modes, "macs": macs, "macs_per_image": mode_macs,
        "instructions_per_image_covers": "classification from the int8 input to the class "
                                         "scores; quantizing the image and the argmax excluded",
        "instructions_per_mac": {m: round(v / mode_macs[m], 3) for m, v in modes.items()
                                 if mode_macs[m]},
    }  # fmt: skip


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``compare`` report from reports on consecutive chunks of images (a mode run on
    some chunks only is merged over those, its ``images`` says how many)."""
    n = sum(p["images"] for p in parts)

    def mean(get, over: list[dict[str, Any]]) -> float:
        return sum(get(p) * p["images"] for p in over) / sum(p["images"] for p in over)

    blocks = [{k: mean(lambda p, i=i, k=k: p["blocks"][i][k], parts) for k in parts[0]["blocks"][i]}
              for i in range(len(parts[0]["blocks"]))]
    modes = {}
    for m in dict.fromkeys(m for p in parts for m in p["modes"]):
        over = [p for p in parts if m in p["modes"]]
        modes[m] = {"images": sum(p["images"] for p in over),
                    **{k: mean(lambda p, m=m, k=k: p["modes"][m][k], over)
                       for k in over[0]["modes"][m] if k != "images"}}
    return {"images": n, "bit_exact": all(p["bit_exact"] for p in parts), "blocks": blocks,
            "modes": modes}


def fewer_images(mode_report: dict[str, Any], host: dict[str, Any]) -> int | None:
    """The vectors a mode of the host report ran on, where fewer than the report's (the
    first chunk, for a mode that is one computation with the simulated one)."""
    n = mode_report.get("images", host["images"])
    return n if n < host["images"] else None


def host_modes(bundle: ExportBundle, mode: str | None) -> list[str]:
    """The modes the host build runs on every vector: all of them, or only ``mode`` when the
    export's modes are one computation (``modes_coincide``); the others then run on the
    first chunk."""
    modes = list(bundle.manifest["modes"])
    if mode is None or len(modes) == 1 or not modes_coincide(bundle.manifest):
        return modes
    return [mode]


def check_host(bundle: ExportBundle, c_dir: Path, raw: np.ndarray, labels: np.ndarray,
               work: Path, chunk: int = HOST_CHUNK, workers: int | None = None,
               tflm_images: int = 0, mode: str | None = None
               ) -> tuple[dict[str, Any], HarnessOutputs]:
    """Build the library for this machine, run it on ``raw``, compare every block's outputs
    and the class scores with the reference kernels (in chunks of images, so memory stays
    small; the chunks shared by worker processes); returns the report and the harness
    outputs of the first chunk.

    Every vector runs every block and the modes of :func:`host_modes`; the first chunk runs
    every mode. The chunks that start before ``tflm_images`` also run every block call of
    the reference kernels through TFLM: the report's ``tflm`` holds the images so checked
    and the largest difference per block."""
    modes = list(bundle.manifest["modes"])
    log.info("host build: compiling the C library and running %d test vectors", len(raw))
    exe = build_host(c_dir, work, modes, optimize=HOST_OPTIMIZE)
    rest_modes = host_modes(bundle, mode)
    rest = exe
    if rest_modes != modes:
        (work / "rest").mkdir(exist_ok=True)
        rest = build_host(c_dir, work / "rest", rest_modes, optimize=HOST_OPTIMIZE)

    def shard(job: tuple[int, int], progress: Progress) -> tuple[list, HarnessOutputs, list]:
        lo, hi = job
        sub = work / f"host-{lo}"
        sub.mkdir(exist_ok=True)
        tflm = make_runners(bundle, "tflm") if lo < tflm_images else None
        parts, first, checks = [], None, []
        for start in range(lo, max(hi, lo + 1), chunk):
            part = slice(start, min(start + chunk, hi))
            program, ran = (exe, modes) if start == 0 else (rest, rest_modes)
            got = run_harness(program, raw[part], sub, block_shapes(bundle), bundle.num_classes,
                              ran, True, timeout=START_SECONDS + HOST_SECONDS_PER_IMAGE * chunk)
            checked = tflm if start < tflm_images else None
            ref = Reference(bundle, raw[part], tflm=checked)
            parts.append(compare(got, ref, labels[part]))
            if checked is not None:
                checks.append((len(raw[part]), ref.tflm_diffs))
            first = got if first is None else first
            progress(len(raw[part]))
        assert first is not None
        return parts, first, checks

    with ThrottledBar(len(raw), "host build of the C library", unit="image") as bar:
        results = map_forked(shard, shard_bounds(len(raw), workers, chunk), "host build",
                             lambda n: bar.step(n=n))
    report = _merge([p for parts, _, _ in results for p in parts])
    checks = [c for _, _, cs in results for c in cs]
    report["tflm"] = {"images": sum(n for n, _ in checks),
                      "max_lsb": [max(d[i] for _, d in checks) for i in range(len(bundle.blocks))]
                      if checks else []}
    return report, results[0][1]


def check_emulated(bundle: ExportBundle, c_dir: Path, profile: McuProfile,
                   plan: PipelinePlan | None,
                   raw: np.ndarray, labels: np.ndarray, work: Path,
                   host: HarnessOutputs | None = None, compare_tflm: bool = True,
                   workers: int | None = None) -> dict[str, Any]:
    """Cross-compile for ``profile``'s core, run ``raw`` under QEMU, compare, and (given the
    simulator's ``plan``) measure the binary beside the modelled figures."""
    target = target_for(profile)
    modes = list(bundle.manifest["modes"])
    log.info("Cortex-M build for %s (%s), %d images under QEMU", profile.name, target.core,
             len(raw))
    try:
        build = build_arm(c_dir, work, modes, target, profile)
    except FirmwareDoesNotFit as exc:
        raise FirmwareDoesNotFit(f"{exc} on {profile.name} ({profile.sram_bytes} B RAM, "
                                 f"{profile.flash_bytes} B flash)\n{arena_table(bundle)}",
                                 exc.overflows) from None

    def shard(job: tuple[int, int], progress: Progress) -> HarnessOutputs:
        lo, hi = job
        sub = work / f"emulated-{lo}"
        sub.mkdir(exist_ok=True)
        got = run_harness(build.elf, raw[lo:hi], sub, block_shapes(bundle), bundle.num_classes,
                          modes, True, target=target,
                          timeout=EMULATOR_START_SECONDS + EMULATED_SECONDS_PER_IMAGE * (hi - lo))
        progress(hi - lo)
        return got

    with ThrottledBar(len(raw), f"emulated {target.label}", unit="image") as bar:
        got = concat_outputs(map_forked(shard, shard_bounds(len(raw), workers, 1),
                                        f"emulated {target.label}", lambda n: bar.step(n=n)))
    report = compare(got, Reference(bundle, raw), labels)
    if compare_tflm:
        report["bit_exact_vs_tflm"] = compare(got, Reference(bundle, raw, "tflm"),
                                              labels)["bit_exact"]
    if host is not None:
        n = len(raw)
        report["bit_exact_vs_host"] = all(
            np.array_equal(got.scores[m], host.scores[m][:n]) for m in modes) and all(
            np.array_equal(a, b[:n]) for a, b in zip(got.features, host.features, strict=True))
    if plan is not None:
        report.update(_measured(build, got, bundle, plan, profile))
        report.update(_cycles(build, raw[0], work / "traced", report, profile))
    return report


def _cycles(build: ArmBuild, image: np.ndarray, work: Path, measured: dict[str, Any],
            profile: McuProfile) -> dict[str, Any]:
    """The estimated cycles beside the measured instructions: the library's cycles per
    instruction from one traced image under the core's documented timings."""
    est = library_cycle_estimate(build.elf, build.target, set(build.library_symbols), image,
                                 work, EMULATOR_START_SECONDS + 10 * EMULATED_SECONDS_PER_IMAGE)
    cpi = est["cycles_per_instruction"]
    per_image = {m: round(v * cpi) for m, v in measured["instructions_per_image"].items()}
    for b in measured["blocks"]:
        b["cycles_estimate"] = round(b["instructions"] * cpi)
    return {"cycle_estimate": {**est, "per_image": per_image,
                               "ms_per_image": {m: round(1e3 * c / profile.clock_hz, 2)
                                                for m, c in per_image.items()},
                               "label": "estimate: measured instructions x the cycles per "
                                        "instruction of the library's traced instruction mix "
                                        "under the core's documented timings (zero wait "
                                        "states)"}}


def run_firmware(bundle: ExportBundle, profile: McuProfile, plan: PipelinePlan,
                 raw: np.ndarray, labels: np.ndarray, emulated_images: int = 20,
                 work_dir: Path | None = None, cache: dict | None = None,
                 workers: int | None = None, tflm_images: int = 0,
                 mode: str | None = None) -> dict[str, Any]:
    """Host build on ``raw`` (all given vectors; ``mode``, the simulated one, on every
    vector: ``host_modes``), Cortex-M build + QEMU on the first few.

    ``cache`` (kept by the caller) holds the host run, which no profile changes.
    """
    c_dir = c_dir_of(bundle)
    cache = {} if cache is None else cache
    with work_directory("ctxconv-fw-", work_dir) as work:
        key = ("firmware_host", len(raw), tflm_images, mode)
        if key not in cache:
            cache[key] = check_host(bundle, c_dir, raw, labels, work,
                                    chunk=max(HOST_CHUNK, emulated_images), workers=workers,
                                    tflm_images=tflm_images, mode=mode)
        host_report, host = cache[key]
        report: dict[str, Any] = {"c_dir": str(c_dir), "host": host_report}
        try:
            target_for(profile)
        except FirmwareError as exc:
            report["emulated"] = None
            report["emulated_unavailable"] = str(exc)
            return report
        n = min(emulated_images, len(raw))
        report["emulated"] = check_emulated(bundle, c_dir, profile, plan, raw[:n], labels[:n],
                                            work, host, workers=workers)
    return report


def firmware_table(fw: dict[str, Any]) -> str:
    """The firmware part of a report, for people."""
    kb = 1024
    host = fw["host"]
    lines = [f"generated C ({fw['c_dir']}), host build: {host['images']} test vectors, every "
             f"block's outputs and the class scores bit-exact with the reference kernels: "
             f"{host['bit_exact']} ("
             + ", ".join(f"{m} scores {v['scores_equal']:.2%}, top-1 {v['top1_equal']:.2%}"
                         + (f" on the first {n}" if (n := fewer_images(v, host)) else "")
                         for m, v in host["modes"].items()) + ")"]
    emu = fw.get("emulated")
    if emu is None:
        lines.append(f"emulated MCU: {fw.get('emulated_unavailable')}")
        return "\n".join(lines)
    lines += [
        f"emulated {emu['target']}: {emu['images']} images, bit-exact with the reference "
        f"kernels: {emu['bit_exact']}, with TFLM: {emu.get('bit_exact_vs_tflm')}, with the "
        f"host build: {emu['bit_exact_vs_host']}",
        f"{'block':<8}{'flash KB':>10}{'model KB':>10}{'instr':>14}{'MACs':>12}{'instr/MAC':>11}"
        f"{'model cyc':>14}{'meas/model':>11}",
    ]  # fmt: skip
    for b in emu["blocks"]:
        ipm = f"{b['instructions_per_mac']:.2f}" if b["instructions_per_mac"] else "-"
        lines.append(f"{b['name']:<8}{b['flash_bytes'] / kb:>10.1f}"
                     f"{b['modelled_flash_bytes'] / kb:>10.1f}{b['instructions']:>14,}"
                     f"{b['macs']:>12,}{ipm:>11}{b['modelled_cycles']:>14,}"
                     f"{b['instructions_over_modelled_cycles']:>11.3f}")
    ipm_mode = emu.get("instructions_per_mac", {})
    per_image = ", ".join(f"{m} {v:,}" + (f" ({ipm_mode[m]:.2f} per MAC)" if m in ipm_mode else "")
                          for m, v in emu["instructions_per_image"].items())
    if "instructions_per_image_covers" in emu:
        per_image += f" [{emu['instructions_per_image_covers']}]"
    lines += [
        f"binary: flash {emu['flash_bytes'] / kb:.1f} KB (library "
        f"{emu['library_flash_bytes'] / kb:.1f} KB, kernels "
        f"{emu['kernel_code_bytes'] / kb:.1f} KB; .tflite files "
        f"{emu['tflite_bytes'] / kb:.1f} KB), RAM {emu['ram_bytes'] / kb:.1f} KB = static "
        f"{emu['static_ram_bytes'] / kb:.1f} + stack high-water {emu['stack_high_water_bytes']} B"
        f" + I/O {emu['io_buffer_bytes']} B (modelled {emu['modelled_sram_bytes'] / kb:.1f} KB, "
        f"ratio {emu['ram_measured_over_modelled']:.3f})",
        f"instructions per image (measured): {per_image}",
    ]  # fmt: skip
    est = emu.get("cycle_estimate")
    if est:
        lines.append("cycles per image (estimate: " + f"{est['cycles_per_instruction']:.3f} "
                     "cycles per instruction of the traced mix, documented "
                     f"{est['timing']} timings, zero wait states): " + ", ".join(
                         f"{m} {c:,} ({est['ms_per_image'][m]:.1f} ms)"
                         for m, c in est["per_image"].items())
                     + (f"; {est['timing_note']}" if est["timing_note"] else ""))
    if "ram_over_tflm_largest_block" in emu:
        lines.append(f"RAM / TFLM's measured minimum arena of the largest block: "
                     f"{emu['ram_over_tflm_largest_block']:.3f}")
    return "\n".join(lines)
