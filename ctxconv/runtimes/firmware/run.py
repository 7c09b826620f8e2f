"""Run a harness build on images (natively, or under QEMU) and read back what it recorded.

The harness writes its progress (``block IMAGE BLOCK``, ``classify_MODE IMAGE``) on the
console before each step, so a fault or a hang is reported with the image and block it
happened in; the emulator is always killed at the time limit.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ctxconv.runtimes.firmware.targets import ArmTarget, FirmwareError
from ctxconv.runtimes.firmware.toolchain import die_with_parent, find

CALIBRATION_INSTRUCTIONS = 2_000_000  # the harness's calibration loop


@dataclass
class BlockShape:
    """What the harness writes per block: passes x (features, goodness output)."""

    passes: int
    features_bytes: int
    score_bytes: int  # K class scores, or 1 (an energy goodness per pass)


@dataclass
class HarnessOutputs:
    """Everything one harness run recorded, per image."""

    features: list[np.ndarray]  # per block: (N, passes, features_bytes) int8
    block_scores: list[np.ndarray]  # per block: (N, passes, score_bytes) int8
    block_ticks: list[np.ndarray]  # per block: (N,) uint64
    scores: dict[str, np.ndarray]  # per mode: (N, K) int32
    mode_ticks: dict[str, np.ndarray]  # per mode: (N,) uint64
    calibration_ticks: int
    stack_used: int

    def instructions(self, ticks: np.ndarray) -> np.ndarray:
        """Counter ticks -> instructions (calibrated with a loop of known length)."""
        return ticks_to_instructions(ticks, self.calibration_ticks)


def concat_outputs(parts: list[HarnessOutputs]) -> HarnessOutputs:
    """One record of several runs of the same build on consecutive images. Each run times
    its own calibration loop (the counter's granularity makes them differ by a tick or so),
    so every run's ticks are rescaled to the first run's calibration."""
    first = parts[0]
    cal = first.calibration_ticks

    def ticks(p: HarnessOutputs, t: np.ndarray) -> np.ndarray:
        if p.calibration_ticks == cal:
            return np.asarray(t, np.float64)
        if p.calibration_ticks <= 0 or cal <= 0:
            raise FirmwareError("runs of one build disagree on the instruction counter")
        return np.asarray(t, np.float64) * cal / p.calibration_ticks

    def cat(arrays: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(arrays, axis=0)

    blocks = range(len(first.features))
    return HarnessOutputs(
        [cat([p.features[b] for p in parts]) for b in blocks],
        [cat([p.block_scores[b] for p in parts]) for b in blocks],
        [cat([ticks(p, p.block_ticks[b]) for p in parts]) for b in range(len(first.block_ticks))],
        {m: cat([p.scores[m] for p in parts]) for m in first.scores},
        {m: cat([ticks(p, p.mode_ticks[m]) for p in parts]) for m in first.mode_ticks},
        cal, max(p.stack_used for p in parts))


def ticks_to_instructions(ticks: np.ndarray, calibration_ticks: int) -> np.ndarray:
    """Counter ticks -> instructions: the harness's calibration loop of
    ``CALIBRATION_INSTRUCTIONS`` took ``calibration_ticks``."""
    if calibration_ticks <= 0:
        raise FirmwareError("this run has no instruction counter (host build)")
    return np.asarray(ticks, np.float64) * CALIBRATION_INSTRUCTIONS / calibration_ticks


def encode_inputs(images: np.ndarray, per_block: bool) -> bytes:
    """Harness input file: count, flags, raw uint8 images."""
    header = np.array([len(images), 1 if per_block else 0], "<i4")
    return header.tobytes() + np.ascontiguousarray(images, np.uint8).tobytes()


def decode_outputs(data: bytes, n: int, blocks: list[BlockShape], k: int, modes: list[str],
                   per_block: bool) -> HarnessOutputs:
    """Parse the harness output file (layout in harness.c)."""
    fields: list[tuple[str, str, tuple[int, ...]]] = []
    if per_block:
        for b, shape in enumerate(blocks):
            fields.append((f"b{b}", "V", (shape.passes,
                                          shape.features_bytes + shape.score_bytes)))
            fields.append((f"t{b}", "<u8", ()))
    for m in modes:
        fields += [(f"s_{m}", "<i4", (k,)), (f"t_{m}", "<u8", ())]
    dtype = np.dtype([(name, np.int8 if kind == "V" else kind, shape)
                      for name, kind, shape in fields])
    trailer = 12
    if len(data) != dtype.itemsize * n + trailer:
        raise FirmwareError(f"harness output has {len(data)} bytes, expected "
                            f"{dtype.itemsize * n + trailer} for {n} images")
    rec = np.frombuffer(data[: dtype.itemsize * n], dtype)
    feats, bscores, bticks = [], [], []
    if per_block:
        for b, shape in enumerate(blocks):
            both = rec[f"b{b}"]
            feats.append(both[..., : shape.features_bytes])
            bscores.append(both[..., shape.features_bytes :])
            bticks.append(rec[f"t{b}"])
    cal, stack = np.frombuffer(data[-trailer:], np.dtype([("c", "<u8"), ("s", "<u4")]))[0]
    return HarnessOutputs(feats, bscores, bticks, {m: rec[f"s_{m}"] for m in modes},
                          {m: rec[f"t_{m}"] for m in modes}, int(cal), int(stack))


def _where(stdout: str) -> str:
    """The last progress marker, as words."""
    for line in reversed(stdout.splitlines()):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "block":
            return f"in block {parts[2]} of image {parts[1]}"
        if len(parts) == 3 and parts[0].startswith("classify_"):
            return f"in {parts[0]} of image {parts[1]}"
        if len(parts) == 3 and parts[:2] == ["train", "step"]:
            return f"in training step {parts[2]}"
    return "before the first block"


def _execute(cmd: list[str], cwd: Path, what: str, timeout: float) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
    except subprocess.TimeoutExpired as exc:
        out = "".join(s.decode(errors="replace") if isinstance(s, bytes) else (s or "")
                      for s in (exc.stdout, exc.stderr))
        raise FirmwareError(f"{what} did not finish within {timeout:.0f} s (stopped "
                            f"{_where(out)})") from None
    console = proc.stdout + proc.stderr  # QEMU writes the semihosting console to stderr
    if proc.returncode != 0:
        fault = next((ln for ln in console.splitlines() if ln.startswith(("fault", "error"))),
                     console.strip()[-300:] or f"exit status {proc.returncode}")
        raise FirmwareError(f"{what} failed {_where(console)}: {fault}")
    return console


def run_program(program: Path, inputs: bytes, work: Path, timeout: float,
                target: ArmTarget | None = None) -> bytes:
    """Run a harness build (host executable, or an ELF for ``target`` under QEMU) on the
    input file ``inputs``; returns its output file."""
    (work / "inputs.bin").write_bytes(inputs)
    out = work / "outputs.bin"
    out.unlink(missing_ok=True)
    if target is None:
        cmd, what = [str(program), "inputs.bin", "outputs.bin"], "host build"
    else:
        cmd = [find("qemu-system-arm"), "-M", target.machine, "-nographic", "-monitor", "none",
               "-serial", "none", "-semihosting-config", "enable=on,target=native",
               "-icount", "shift=0", "-kernel", str(program)]
        what = f"emulated {target.label}"
    _execute(cmd, work, what, timeout)
    if not out.exists():
        raise FirmwareError(f"{what} wrote no output file")
    return out.read_bytes()


def run_harness(program: Path, images: np.ndarray, work: Path, blocks: list[BlockShape],
                k: int, modes: list[str], per_block: bool, timeout: float,
                target: ArmTarget | None = None) -> HarnessOutputs:
    """Run ``program`` (host executable, or an ELF for ``target`` under QEMU) on ``images``."""
    data = run_program(program, encode_inputs(images, per_block), work, timeout, target)
    return decode_outputs(data, len(images), blocks, k, modes, per_block)
