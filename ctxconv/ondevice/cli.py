"""``ctxconv-sim-train EXPORT_DIR --mcu NAME``: forward-only training of each block on an MCU.

Per block: training SRAM at the batch (buffers placed by TFLM's greedy planner), flash,
the largest batch that fits on every known profile, float32 MACs and estimated time per
step, beside backprop through the whole network; exit code 4 when a block does not fit
at the requested batch, 2 on bad input. ``--steps N`` also runs N simulated training
steps per block on the export's training vectors (its calibration images) and reports
the accuracy of that block's goodness on the test vectors before and after.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.blockgraph.bundle import ExportBundle, load_export
from ctxconv.blockgraph.geometry import UPDATE_MODES
from ctxconv.blockgraph.ir import ModelFileError
from ctxconv.cli_errors import DEBUG_HELP, check_output_path, interruptible, report_error
from ctxconv.ondevice.accounting import ExportModel, backprop_report, block_report
from ctxconv.ondevice.inplace import STORES, inplace_report
from ctxconv.ondevice.loading import block_from_export, geometries
from ctxconv.ondevice.losses import OBJECTIVES, wrong_labels
from ctxconv.ondevice.optim import OPTIMIZERS, make_optimizer
from ctxconv.ondevice.prefix import FrozenPrefix
from ctxconv.ondevice.step import accuracy, local_step
from ctxconv.sim.profiles import list_profiles, load_profile, profiles_help

EXIT_ERROR, EXIT_CHECK_FAILED, EXIT_DOES_NOT_FIT = 2, 3, 4
KB = 1024


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ctxconv-sim-train",
        description="Size forward-only on-device training of every block of an int8 export: "
                    "training SRAM, flash, largest batch per MCU profile, MACs and time per "
                    "step, and backprop through the whole network for comparison.",
    )  # fmt: skip
    p.add_argument("export_dir", help="int8 export (ctxconv-export RUN_DIR --int8); a float "
                   "export works when the int8 one sits beside it as RUN_DIR/export")
    p.add_argument("--mcu", default="nrf52840",
                   help=f"MCU profile name or YAML path (known: {profiles_help()})")
    p.add_argument("--batch", type=int, default=8, help="training batch size (default 8)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd")
    p.add_argument("--objective", choices=OBJECTIVES, default="softmax")
    p.add_argument("--update", choices=sorted(UPDATE_MODES), default="all",
                   help="parameters trained: all, head (goodness head only) or bias (conv "
                        "bias, context weight, head bias); the rest stay int8 in flash")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate for --steps")
    p.add_argument("--steps", type=int, default=0,
                   help="also run N simulated training steps per block on the export's "
                        "training vectors (accuracy on its test vectors)")
    p.add_argument("--float-export", default=None,
                   help="float export for the initial weights of --steps (default: "
                        "RUN_DIR/export-float when present, else the dequantized int8 weights)")
    p.add_argument("--weights", choices=("fp32", "int8"), default="fp32",
                   help="fp32: the trained parameters as float32 with gradients and optimizer "
                        "state; int8: all weights stay int8 and are updated in place one "
                        "output channel at a time (SGD, quantization-aware scaling, "
                        "stochastic rounding)")
    p.add_argument("--weight-store", choices=STORES, default="auto",
                   help="with --weights int8: where the changing weights live (ram: copied "
                        "to SRAM; flash: pages rewritten each step; auto: SRAM when it fits)")
    p.add_argument("--epochs", type=int, default=0,
                   help="with --weights int8: train every block in turn for N epochs on the "
                        "export's training vectors (test accuracy, simulated device time)")
    p.add_argument("--from-scratch", action="store_true",
                   help="with --epochs: start every block from a seeded random init")
    p.add_argument("--firmware-block", type=_firmware_blocks, default=None,
                   metavar="all|I",
                   help="with --weights int8: also train this block (all: every trainable "
                        "block, in order) in the exported C library (host build, and under "
                        "QEMU for the MCU's core; --update all|head|bias) and compare with "
                        "the simulator bit for bit")
    p.add_argument("--firmware-steps", type=int, default=3,
                   help="steps of each --firmware-block (batches taken in order)")
    p.add_argument("--firmware-epochs", type=int, default=0,
                   help="train each --firmware-block in C for N whole epochs instead "
                        "(shuffled as --epochs shuffles them) and report the test accuracy "
                        "of the weights the C returned and the simulated device time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", dest="json_path", default=None, help="write the report as JSON")
    p.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return p


def _bundles(export_dir: Path, float_dir: str | None) -> tuple[ExportBundle, ExportBundle]:
    """(int8 export for accounting and the prefix, export for initial weights)."""
    bundle = load_export(export_dir)
    int8 = bundle
    if not bundle.manifest.get("int8"):
        sibling = export_dir.parent / "export"
        if not (sibling / "manifest.json").is_file():
            raise ModelFileError(f"{export_dir} is a float export and no int8 export sits beside "
                                 f"it ({sibling}): run ctxconv-export RUN_DIR --int8 first")
        int8 = load_export(sibling)
        if not int8.manifest.get("int8"):
            raise ModelFileError(f"{sibling} is not an int8 export")
    init = bundle if not bundle.manifest.get("int8") else int8
    candidate = Path(float_dir) if float_dir else export_dir.parent / "export-float"
    if float_dir or (candidate / "manifest.json").is_file():
        init = load_export(candidate)
    if len(init.graphs) != len(int8.graphs):
        raise ModelFileError(f"{init.path} and {int8.path} hold different models")
    return int8, init


def run_steps(int8: ExportBundle, init: ExportBundle, index: int, steps: int, batch: int,
              optimizer: str, objective: str, update: str, lr: float) -> dict[str, Any]:
    """N simulated training steps of block ``index`` on the export's training vectors."""
    from ctxconv.blockgraph.geometry import trainable_names

    raw, labels = int8.train_vectors()
    raw_test, labels_test = int8.test_vectors()
    block = block_from_export(init, index)
    prefix = FrozenPrefix(int8, index)
    x, x_test = prefix(raw), prefix(raw_test)  # int8 prefix, dequantized
    opt = make_optimizer(optimizer, lr)
    names = trainable_names(block.geom, update)
    rng = np.random.default_rng(0)
    before = accuracy(block, x_test, labels_test)
    losses = []
    t0 = time.perf_counter()
    for s in range(steps):
        idx = (np.arange(batch) + s * batch) % len(labels)
        y = labels[idx].astype(np.int64)
        neg = wrong_labels(y, block.geom.num_classes, rng) if objective == "bce" else None
        losses.append(local_step(block, opt, x[idx], y, objective, names, neg, lr=lr).loss)
    host_ms = 1e3 * (time.perf_counter() - t0) / steps
    window = max(1, steps // 10)  # single-batch losses are noisy: average a tenth of the run
    return {"steps": steps, "loss_window": window,
            "first_loss": float(np.mean(losses[:window])),
            "last_loss": float(np.mean(losses[-window:])),
            "accuracy_before": before, "accuracy_after": accuracy(block, x_test, labels_test),
            "host_ms_per_step": host_ms, "init": str(init.path.name),
            "data": "export training vectors; accuracy on the test vectors"}


def report(int8: ExportBundle, mcu: str, batch: int, optimizer: str, objective: str,
           update: str) -> dict[str, Any]:
    profile = load_profile(mcu)
    model = ExportModel(geometries(int8), int8.graphs, [len(b) for b in int8.tflite], int8.tflite)
    n = len(model.geoms)
    blocks = [block_report(model, i, profile, batch, optimizer, objective, update)
              for i in range(n)]
    per_profile: dict[str, list[int]] = {}
    for name in list_profiles():
        p = load_profile(name)
        per_profile[name] = [block_report(model, i, p, batch, optimizer, objective,
                                          update)["largest_batch"] for i in range(n)]
    alternatives = {m: [block_report(model, i, profile, 1, optimizer, objective, m)["sram_bytes"]
                        for i in range(n)] for m in sorted(UPDATE_MODES)}
    return {"export": str(int8.path), "mcu": profile.name, "batch": batch,
            "optimizer": optimizer, "objective": objective, "update": update,
            "blocks": blocks, "largest_batch_per_profile": per_profile,
            "sram_at_batch1_by_update": alternatives,
            "backprop": backprop_report(model, profile, batch, optimizer, objective),
            "fits": all(b["fits"] for b in blocks)}


def int8_report(int8: ExportBundle, mcu: str, batch: int, store: str) -> dict[str, Any]:
    """All weights of every block trained in place as int8 (``ondevice/inplace``)."""
    profile = load_profile(mcu)
    model = ExportModel(geometries(int8), int8.graphs, [len(b) for b in int8.tflite], int8.tflite)
    n = len(model.geoms)
    blocks = [inplace_report(model, i, profile, batch, store) for i in range(n)]
    per_profile = {}
    for name in list_profiles():
        p = load_profile(name)
        per_profile[name] = [inplace_report(model, i, p, batch, store if store != "flash" or
                                            name == profile.name else "auto")["largest_batch"]
                             for i in range(n)]
    return {"export": str(int8.path), "mcu": profile.name, "batch": batch, "weights": "int8",
            "store": store, "optimizer": "sgd", "objective": "softmax", "blocks": blocks,
            "largest_batch_per_profile": per_profile,
            "backprop": backprop_report(model, profile, batch, "sgd", "softmax"),
            "fits": all(b["fits"] for b in blocks)}


def format_int8_table(rep: dict[str, Any]) -> str:
    lines = [f"forward-only training on {rep['mcu']}, all weights int8 updated in place "
             f"(batch {rep['batch']}, SGD, softmax, weight store {rep['store']})",
             f"{'block':>5} {'params':>9} {'store':>6} {'SRAM KB':>9} {'avail KB':>9} "
             f"{'flash KB':>9} {'max batch':>9} {'MMAC':>8} {'ms/step':>10}  verdict"]
    for b in rep["blocks"]:
        verdict = "fits" if b["fits"] else "DOES NOT FIT (" + ", ".join(
            k for k, ok in (("SRAM", b["fits_sram"]), ("flash", b["fits_flash"])) if not ok) + ")"
        macs = (b["macs"]["int8_macs"] + b["macs"]["fp32_macs"]) / 1e6
        lines.append(f"{b['block']:>5} {b['trained_params']:>9,} {b['store']:>6} "
                     f"{b['sram_bytes'] / KB:>9.1f} {b['available_sram_bytes'] / KB:>9.1f} "
                     f"{b['flash_bytes'] / KB:>9.1f} {b['largest_batch']:>9} {macs:>8.2f} "
                     f"{b['ms_per_step']:>10.1f}  {verdict}")
        if b["store"] == "flash":
            lines.append(f"      block {b['block']}: weights stay in flash, "
                         f"{b['flash_pages_written_per_step']} pages erased and written per "
                         f"step ({b['flash_write_ms_per_step']:.0f} ms); flash endurance "
                         f"allows {b['max_steps_by_endurance']:,} steps")
    lines += ["largest training batch per profile and block (0: not even batch 1 fits):",
              *(f"  {p:<10} " + ", ".join(f"block {i} {v}" for i, v in enumerate(vals))
                for p, vals in rep["largest_batch_per_profile"].items())]
    t = rep.get("training")
    if t:
        init = "from scratch" if t["from_scratch"] else "from the export"
        for b in t["blocks"]:
            lines.append(f"block {b['block']}: {b['steps']} steps ({b['epochs']} epochs, batch "
                         f"{b['batch']}, {init}), loss {b['first_loss']:.4f} -> "
                         f"{b['last_loss']:.4f}, test "
                         f"accuracy block {b['test_accuracy_block']:.2%}, summed over blocks "
                         f"{b['test_accuracy_summed']:.2%}, simulated device time "
                         f"{b['device_seconds']:.1f} s")
        lines.append(f"test accuracy after training every block: {t['test_accuracy']:.2%}")
    fw = rep.get("firmware")
    if fw:
        lines += _firmware_lines(fw, rep["mcu"])
    return "\n".join(lines)


def _firmware_lines(fw: dict[str, Any], mcu: str) -> list[str]:
    """What the exported C library learned (``c_check.check_training``), block by block."""
    lines = []
    init = "from scratch" if fw["from_scratch"] else "from the export"
    for b in fw["blocks"]:
        run = (f"{b['epochs']} epochs, " if b.get("epochs") else "") + f"{b['steps']} steps"
        for where in ("host", "emulated"):
            r = b.get(where)
            if r:
                exact = r["int8_bit_exact"] and r["inference_params_bit_exact"]
                lines.append(f"block {b['block']} trained in the C library ({where}, {run} of "
                             f"batch {b['batch']}, update {b['update']}, {init}): int8 "
                             f"weights and inference parameters "
                             f"{'bit-exact' if exact else 'DIFFER'}, max relative error of "
                             f"float state and loss {r['max_rel_error']:.2e}")
        lines.append(f"  test accuracy of block {b['block']} ({b['test_images']} test "
                     f"vectors): simulator {b['simulator']['test_accuracy']:.2%} (initial "
                     f"{b['test_accuracy_initial']:.2%})" + "".join(
                         f", {where} C {b[where]['test_accuracy']:.2%}"
                         + (" (equal)" if b[where]["test_accuracy_equal"] else " (DIFFERS)")
                         for where in ("host", "emulated") if b.get(where)))
        if "block_by_block_test_accuracy" in b:
            same = all(b[w].get("equals_block_by_block", True)
                       for w in ("host", "emulated") if b.get(w))
            lines.append(f"  the simulator's block-by-block run reached "
                         f"{b['block_by_block_test_accuracy']:.2%} for block 0: "
                         f"{'the same' if same else 'DIFFERENT'}")
        e = b.get("emulated")
        if e:
            lines.append(f"  measured: {e['instructions_per_step']:,} instructions per step "
                         f"({e['instructions_per_sample']:,} per sample; "
                         f"+{e['prefix_instructions_per_image']:,} per image for the frozen "
                         f"prefix; planner {e['modelled_cycles_per_step']:,} cycles)")
            lines.append(f"  simulated {mcu} time for the {b['steps']} steps: >= "
                         f"{e['device_seconds_lower_bound']:.1f} s ({e['instructions_total']:,} "
                         f"instructions emulated, at {e['clock_hz'] / 1e6:.0f} MHz, one cycle "
                         f"each); planner {b['planned_device_seconds']:.1f} s "
                         f"({b['planned']['ms_per_step']:.1f} ms/step)")
    for where in ("host", "emulated"):
        r = fw.get(where)
        if r:
            lines.append(f"after training ({where}): ctxconv_classify's class scores on "
                         f"{fw['eval_images']} test vectors "
                         f"{'bit-exact' if r['scores_bit_exact'] else 'DIFFER'} with the "
                         f"reference kernels on the trained graphs; int8 pipeline test "
                         f"accuracy with the C's weights {r['pipeline_test_accuracy']:.2%} "
                         f"(simulator {fw['simulator_pipeline_test_accuracy']:.2%})")
    e = fw.get("emulated")
    if e:
        lines.append(f"  measured on {e['target']}: RAM {e['ram_bytes'] / KB:.1f} KB (static "
                     f"{e['static_ram_bytes'] / KB:.1f} KB, of which training buffers "
                     f"{e['training_buffers_ram_bytes'] / KB:.1f} KB; stack "
                     f"{e['stack_high_water_bytes']} B), flash {e['flash_bytes'] / KB:.1f} KB;"
                     f" planner SRAM per block: " + ", ".join(
                         f"{b['block']}: {b['emulated']['modelled_sram_bytes'] / KB:.1f} KB"
                         for b in fw["blocks"]))
    return lines


def format_table(rep: dict[str, Any]) -> str:
    b0 = rep["batch"]
    lines = [f"forward-only training on {rep['mcu']} (batch {b0}, {rep['optimizer']}, "
             f"{rep['objective']}, update {rep['update']})",
             f"{'block':>5} {'trained':>9} {'SRAM KB':>9} {'avail KB':>9} {'flash KB':>9} "
             f"{'max batch':>9} {'fp32 MMAC':>10} {'ms/step':>10}  verdict"]
    for b in rep["blocks"]:
        verdict = "fits" if b["fits"] else "DOES NOT FIT (" + ", ".join(
            k for k, ok in (("SRAM", b["fits_sram"]), ("flash", b["fits_flash"])) if not ok) + ")"
        lines.append(f"{b['block']:>5} {b['trained_params']:>9,} {b['sram_bytes'] / KB:>9.1f} "
                     f"{b['available_sram_bytes'] / KB:>9.1f} {b['flash_bytes'] / KB:>9.1f} "
                     f"{b['largest_batch']:>9} {b['fp32_macs']['total'] / 1e6:>10.2f} "
                     f"{b['ms_per_step']:>10.1f}  {verdict}")
    bp = rep["backprop"]
    worst = max(b["sram_bytes"] for b in rep["blocks"])
    lines += [f"backprop through the whole network: SRAM {bp['sram_bytes'] / KB:.1f} KB "
              f"({bp['sram_bytes'] / worst:.2f}x the largest forward-only block), max batch "
              f"{bp['largest_batch']}, {bp['fp32_macs']['total'] / 1e6:.2f} MMAC, "
              f"{bp['ms_per_step']:.1f} ms/step, {'fits' if bp['fits_sram'] else 'does not fit'}",
              "largest training batch per profile and block (0: not even batch 1 fits):",
              *(f"  {p:<10} " + ", ".join(f"block {i} {v}" for i, v in enumerate(vals))
                for p, vals in rep["largest_batch_per_profile"].items()),
              "SRAM KB at batch 1 by --update: " + "; ".join(
                  f"{m} " + "/".join(f"{v / KB:.1f}" for v in vals)
                  for m, vals in rep["sram_at_batch1_by_update"].items())]
    for b in rep["blocks"]:
        if "steps" in b:
            s = b["steps"]
            lines.append(f"block {b['block']}: {s['steps']} simulated steps, loss (mean of the "
                         f"first / last {s['loss_window']} steps) {s['first_loss']:.4f} -> "
                         f"{s['last_loss']:.4f}, accuracy on the test "
                         f"vectors {s['accuracy_before']:.2%} -> {s['accuracy_after']:.2%} "
                         f"({s['host_ms_per_step']:.1f} host ms/step, init {s['init']})")
    for b in rep["blocks"]:
        if not b["fits_sram"]:
            big = sorted(b["buffers"], key=lambda x: -x["bytes"])[:3]
            lines.append(f"block {b['block']} needs {b['sram_bytes']:,} B of SRAM, "
                         f"{b['available_sram_bytes']:,} B available; largest buffers: "
                         + ", ".join(f"{x['name']} {x['bytes']:,} B" for x in big))
    return "\n".join(lines)


@interruptible
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch < 1 or args.steps < 0 or not args.lr > 0:
        print("error: --batch must be >= 1, --steps >= 0 and --lr > 0", file=sys.stderr)
        return EXIT_ERROR
    try:
        check_output_path(args.json_path, "--json")
    except ValueError as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    if args.weights == "int8":
        return main_int8(args)
    try:
        int8, init = _bundles(Path(args.export_dir), args.float_export)
        rep = report(int8, args.mcu, args.batch, args.optimizer, args.objective, args.update)
        if args.steps:
            for b in rep["blocks"]:
                b["steps"] = run_steps(int8, init, b["block"], args.steps, args.batch,
                                       args.optimizer, args.objective, args.update, args.lr)
    except (ModelFileError, ValueError, OSError) as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    print(format_table(rep))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rep, indent=2))
    if not rep["fits"]:
        print(f"error: not every block can be trained on {rep['mcu']} at batch {args.batch}",
              file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


def main_int8(args: argparse.Namespace) -> int:
    """--weights int8: accounting, optional block-by-block training and a C training run."""
    from ctxconv.ondevice.scratch import train_blocks
    from ctxconv.runtimes.firmware.build import FirmwareDoesNotFit
    from ctxconv.runtimes.firmware.targets import FirmwareError
    from ctxconv.runtimes.firmware.toolchain import ToolMissing

    if args.epochs < 0 or args.firmware_steps < 1 or args.firmware_epochs < 0:
        print("error: --epochs must be >= 0, --firmware-epochs >= 0 and --firmware-steps >= 1",
              file=sys.stderr)
        return EXIT_ERROR
    try:
        int8, _ = _bundles(Path(args.export_dir), args.float_export)
        rep = int8_report(int8, args.mcu, args.batch, args.weight_store)
        if args.epochs:
            t = train_blocks(int8, args.epochs, args.batch, args.lr, args.seed,
                             args.from_scratch)
            for b, acc in zip(t["blocks"], rep["blocks"], strict=False):
                b["device_seconds"] = b["steps"] * acc["ms_per_step"] / 1e3
            rep["training"] = t
        if args.firmware_block is not None:
            from ctxconv.ondevice.c_check import check_training

            rep["firmware"] = check_training(
                int8, args.firmware_block, load_profile(args.mcu), args.firmware_steps,
                args.batch, args.lr, args.seed, from_scratch=args.from_scratch,
                epochs=args.firmware_epochs or None, update=args.update)
            _same_as_simulator_run(rep)
    except FirmwareDoesNotFit as exc:
        return report_error(exc, EXIT_DOES_NOT_FIT, args.debug)
    except (ModelFileError, ValueError, OSError, FirmwareError, ToolMissing) as exc:
        return report_error(exc, EXIT_ERROR, args.debug)
    print(format_int8_table(rep))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(rep, indent=2, default=_jsonable))
    fw = rep.get("firmware") or {}
    differ = [w for w in ("host", "emulated") if fw.get(w) and not fw[w]["bit_exact"]]
    if differ:
        print(f"error: the C library's training ({', '.join(differ)}) is not bit-exact with "
              "the simulator's; see the lines marked DIFFER", file=sys.stderr)
        return EXIT_CHECK_FAILED
    if not rep["fits"]:
        print(f"error: not every block can be trained on {rep['mcu']} at batch {args.batch}",
              file=sys.stderr)
        return EXIT_DOES_NOT_FIT
    return 0


def _same_as_simulator_run(rep: dict[str, Any]) -> None:
    """Block 0 trained in C from scratch for the epochs of --epochs sees the same batches
    as the simulator's block-by-block run: record whether both reach the same accuracy."""
    fw, t = rep["firmware"]["blocks"][0], rep.get("training")
    if (t is None or fw["block"] != 0 or not fw["from_scratch"] or not t["from_scratch"]
            or fw["epochs"] != t["blocks"][0]["epochs"] or fw["update"] != "all"):
        return
    acc = t["blocks"][0]["test_accuracy_block"]
    fw["block_by_block_test_accuracy"] = acc
    for where in ("host", "emulated"):
        if fw.get(where):
            fw[where]["equals_block_by_block"] = fw[where]["test_accuracy"] == acc


def _firmware_blocks(text: str) -> str | int:
    """``all`` or a block index (argparse type of --firmware-block)."""
    if text == "all":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither 'all' nor a block index") \
            from None


def _jsonable(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


if __name__ == "__main__":
    sys.exit(main())
