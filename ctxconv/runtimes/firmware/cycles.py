"""A cycle estimate from an executed instruction mix and a core's documented timings.

Zero wait states (code and data in single-cycle memory), in-order, single issue. Each class
costs what the core's documentation states; a range is taken at the value named in the
table. Not modelled, so the estimate errs high on the M4 and M33: neighbouring loads and
stores pipelining their address and data phases (each LDR counts its 2 cycles); and the
Cortex-M7's dual issue, branch prediction and caches (its estimate is the single-issue
cost of the same instructions, not a prediction of the M7's cycles).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ctxconv.runtimes.firmware.run import encode_inputs
from ctxconv.runtimes.firmware.targets import ArmTarget, FirmwareError
from ctxconv.runtimes.firmware.trace import InstructionMix, trace_program


@dataclass(frozen=True)
class CoreTiming:
    """Cycles per instruction class; N: registers transferred; P: pipeline refill."""

    name: str
    alu: float
    multiply: float
    divide: float
    load: float
    load_double: float
    store: float
    store_double: float
    multiple_base: float  # LDM/STM/PUSH/POP: base + N
    branch_taken: float  # 1 + P
    branch_not_taken: float
    call_taken: float  # BL
    source: str
    note: str = ""


ARMV7M_SOURCE = ("Cortex-M4F instruction cycle counts, zero wait states (Arm Cortex-M4 "
                 "Devices Generic User Guide, as reproduced in TI SWCU192 table 3-25): data "
                 "processing, multiply (32x32, long, MLA), saturate, SIMD 1; divide 2 to 12 "
                 "(taken as 7); LDR 2, LDRD 1+N = 3; STR 1 with the write buffer, STRD 3; "
                 "LDM/STM/PUSH/POP 1+N; branch 1 not taken, 1+P taken, P 1 to 3 (taken as 2)")

TIMINGS: dict[str, CoreTiming] = {
    "cortex-m4f": CoreTiming("cortex-m4f", 1, 1, 7, 2, 3, 1, 3, 1, 3, 1, 3, ARMV7M_SOURCE),
    "cortex-m33": CoreTiming(
        "cortex-m33", 1, 1, 7, 2, 3, 1, 3, 1, 3, 1, 3, ARMV7M_SOURCE,
        "the ARMv7-M table: the M33's 3-stage pipeline documents the same classes"),
    "cortex-m7": CoreTiming(
        "cortex-m7", 1, 1, 7, 2, 3, 1, 3, 1, 3, 1, 3, ARMV7M_SOURCE,
        "single-issue ARMv7-M costs: the M7 dual-issues and predicts branches, so its real "
        "cycles are fewer"),
    "cortex-m0plus": CoreTiming(
        "cortex-m0plus", 1, 1, 32, 2, 2, 2, 2, 1, 2, 1, 3,
        "Cortex-M0+ Technical Reference Manual, instruction timings: data processing and "
        "MULS (single-cycle multiplier, as RP2040's) 1; LDR/STR 2; LDM/STM/PUSH/POP 1+N; B "
        "taken 2, not taken 1; BL 3; no divide instruction (a library call)"),
}

_MULTIPLY = re.compile(r"^(mul|mla|mls|smul|umul|smla|umla|smml|smmul|smuad|smusd|smlsd|"
                       r"smlal|umaal)")
_BRANCH = ("b", "bx", "blx", "cbz", "cbnz", "tbb", "tbh")


def _registers(args: str) -> int:
    """Registers in a register list ``{r4-r7, lr}``."""
    body = args[args.find("{") + 1 : args.find("}")] if "{" in args else ""
    n = 0
    for part in filter(None, (p.strip() for p in body.split(","))):
        if "-" in part:
            lo, hi = (int(re.sub(r"\D", "", r) or 0) for r in part.split("-"))
            n += hi - lo + 1
        else:
            n += 1
    return max(n, 1)


def instruction_cycles(op: str, args: str, t: CoreTiming) -> float:
    """Cycles of one executed instruction, a branch's refill excluded (counted per outcome)."""
    if op in _BRANCH or op == "bl":
        return 0.0
    if op.startswith(("ldm", "pop", "stm", "push")):
        return t.multiple_base + _registers(args)
    if op.startswith("ldrd"):
        return t.load_double
    if op.startswith("ldr"):
        return t.load
    if op.startswith("strd"):
        return t.store_double
    if op.startswith("str"):
        return t.store
    if op in ("sdiv", "udiv"):
        return t.divide
    if _MULTIPLY.match(op):
        return t.multiply
    return t.alu


def estimate_cycles(mix: InstructionMix, timing: CoreTiming,
                    functions: set[str] | None = None) -> float:
    """Cycles of the mix's instructions in ``functions`` (all by default)."""
    total = 0.0
    for function, counts in mix.counts.items():
        if functions is not None and function not in functions:
            continue
        calls = sum(n for (op, _), n in counts.items() if op == "bl")
        total += sum(n * instruction_cycles(op, args, timing) for (op, args), n in counts.items())
        taken, not_taken = mix.taken[function], mix.not_taken[function]
        total += calls * timing.call_taken + (taken - min(calls, taken)) * timing.branch_taken
        total += not_taken * timing.branch_not_taken
    return total


def library_cycle_estimate(elf: Path, target: ArmTarget, library: set[str], image: np.ndarray,
                           work: Path, timeout: float) -> dict[str, Any]:
    """Trace the harness build ``elf`` on one image (no per-block records, every mode) and
    estimate the cycles per instruction of the library's own functions under ``target``'s
    core timings: what multiplies the measured instruction counts into cycles."""
    timing = TIMINGS.get(target.core)
    if timing is None:
        raise FirmwareError(f"no instruction timings for {target.core}: known "
                            f"{', '.join(TIMINGS)}")
    work.mkdir(parents=True, exist_ok=True)
    (work / "inputs.bin").write_bytes(encode_inputs(image[None], False))
    mix = trace_program(elf, target, work, timeout)
    functions = set(mix.counts) & library
    instructions = mix.instructions(functions)
    if not instructions:
        raise FirmwareError(f"the traced run on {target.label} executed none of the library's "
                            "functions")
    cycles = estimate_cycles(mix, timing, functions)
    return {"cycles_per_instruction": round(cycles / instructions, 4),
            "traced_instructions": instructions, "timing": timing.name,
            "timing_source": timing.source, "timing_note": timing.note}
