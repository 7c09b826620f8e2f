"""The methods behind the measured firmware figures, held against known answers.

* Instructions: a loop of a known number of instructions, timed with the harness's
  counter (SysTick under QEMU ``-icount``) and converted with its calibration, must come
  out at that number (within one counter tick).
* RAM: statics of known size in a library source must be counted exactly by the build's
  symbol accounting, agree with the ELF's own sections, and a known stack array must show
  in the painted-stack high-water mark.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from c_bundles import as_block, bundle_of
from fw_graphs import conv_graph

from ctxconv.runtimes.firmware.build import build_arm
from ctxconv.runtimes.firmware.run import (
    CALIBRATION_INSTRUCTIONS,
    run_program,
    ticks_to_instructions,
)
from ctxconv.runtimes.firmware.targets import target_for
from ctxconv.runtimes.firmware.toolchain import missing_arm_tools
from ctxconv.sim.profiles import load_profile

ARM_MISSING = missing_arm_tools()
needs_arm = pytest.mark.skipif(ARM_MISSING is not None, reason=str(ARM_MISSING))

LOOP_ITERATIONS = 300_000
LOOP_INSTRUCTIONS = 4 * LOOP_ITERATIONS  # nop, nop, subs, bne per iteration
STATIC_BSS, STATIC_DATA, STACK_ARRAY = 4096, 64, 2048

PROBE = f"""
#include <stdint.h>
#include "platform.h"

uint8_t ctxconv_probe_bss[{STATIC_BSS}];
int32_t ctxconv_probe_data[{STATIC_DATA // 4}] = {{1}};

__attribute__((noinline)) static uint32_t deep(uint32_t seed)
{{
    volatile uint8_t local[{STACK_ARRAY}];
    for (uint32_t i = 0; i < sizeof local; ++i) {{
        local[i] = (uint8_t)(seed + i);
    }}
    return local[seed % sizeof local];
}}

int main(void)
{{
    platform_init();
    if (platform_open("inputs.bin", "outputs.bin")) {{
        platform_exit(2);
    }}
    uint32_t n = {LOOP_ITERATIONS}u;
    const uint64_t t0 = platform_ticks();
    __asm__ volatile(".syntax unified\\n1: nop\\n nop\\n subs %0, %0, #1\\n bne 1b"
                     : "+l"(n) : : "cc");
    const uint64_t t1 = platform_ticks();
    const uint64_t e0 = platform_ticks();
    const uint64_t e1 = platform_ticks();
    ctxconv_probe_bss[n] = (uint8_t)deep((uint32_t)ctxconv_probe_data[0]);
    const uint64_t out[2] = {{t1 - t0, e1 - e0}};
    if (platform_write(out, sizeof out)) {{
        platform_exit(3);
    }}
    platform_finish();
    return 0;
}}
"""


@pytest.fixture(scope="module", params=["nrf52840", "rp2040", "nrf5340"])
def probe(tmp_path_factory, request):
    """The probe built with a one-block library for an MCU's core (the nRF52840's
    Cortex-M4 on mps2-an386, the RP2040's Cortex-M0+ on mps2-an385, the nRF5340's
    Cortex-M33 on mps2-an505, linked at that board's secure addresses), and run."""
    work = tmp_path_factory.mktemp("probe")
    bundle_of([as_block(conv_graph(80), "block0", 80)], work)
    src = work / "probe.c"
    src.write_text(PROBE)
    profile = load_profile(request.param)
    target = target_for(profile)
    arm = work / "arm"
    arm.mkdir()
    build = build_arm(work / "c", arm, [], target, profile, harness=(), extra=(src,))
    data = run_program(build.elf, b"", arm, 60.0, target)
    loop, empty, cal_lo, cal_hi, stack = np.frombuffer(data, "<u8", 2).tolist() + list(
        np.frombuffer(data[16:], "<u4", 3))
    return build, {"loop": loop, "empty": empty, "calibration": cal_lo | (cal_hi << 32),
                   "stack": int(stack)}


@needs_arm
def test_a_loop_of_known_length_counts_exactly(probe):
    _, got = probe
    per_tick = CALIBRATION_INSTRUCTIONS / got["calibration"]
    measured = float(ticks_to_instructions(np.array(got["loop"] - got["empty"]),
                                           got["calibration"]))
    # the loop plus its setup, within one tick of the counter (and a few instructions)
    assert abs(measured - LOOP_INSTRUCTIONS) <= per_tick + 4, (measured, per_tick)


@needs_arm
def test_static_ram_is_counted_exactly_and_agrees_with_the_elf(probe):
    build, got = probe
    assert build.library_bytes("ctxconv_probe_", kinds="bB") == STATIC_BSS
    assert build.library_bytes("ctxconv_probe_", kinds="dD") == STATIC_DATA
    library_ram = build.library_bytes(kinds="bBdD")
    elf_ram = build.sections.get(".data", 0) + build.sections.get(".bss", 0)
    assert STATIC_BSS + STATIC_DATA <= library_ram <= elf_ram
    assert STACK_ARRAY <= got["stack"] <= build.stack_bytes
    assert Path(build.elf).stat().st_size > 0


@needs_arm
def test_the_trace_counts_the_loop_and_its_taken_branches(probe, tmp_path):
    """The executed-instruction trace behind the cycle estimate, on the same loop: its nops
    and subs counted, its backward branch taken every iteration but the last."""
    from ctxconv.runtimes.firmware.trace import trace_program

    build, _ = probe
    (tmp_path / "inputs.bin").write_bytes(b"")
    mix = trace_program(build.elf, build.target, tmp_path, 60.0)
    main = mix.counts["main"]
    # (ARMv6-M assemblers write nop as mov r8, r8)
    nops = sum(n for (op, args), n in main.items() if op == "nop" or (op, args) == ("mov",
                                                                                 "r8, r8"))
    subs = sum(n for (op, args), n in main.items() if op == "subs" and args.endswith("#1"))
    # QEMU may restart a block cut short by its instruction budget: a few repeats at most
    assert 2 * LOOP_ITERATIONS <= nops <= 2 * LOOP_ITERATIONS * (1 + 1e-4), nops
    assert LOOP_ITERATIONS <= subs <= LOOP_ITERATIONS * (1 + 1e-4), subs
    assert LOOP_ITERATIONS - 1 <= mix.taken["main"] <= LOOP_ITERATIONS * (1 + 1e-4) + 20
    assert mix.not_taken["main"] >= 1


def test_cycle_estimate_of_a_known_mix_by_hand():
    """Per class, the documented costs: on the M4 a taken branch 1 + P = 3, LDRD 3, a POP
    of 4 registers 1 + 4; on the M0+ a taken B 2, LDR 2."""
    from collections import Counter

    from ctxconv.runtimes.firmware.cycles import TIMINGS, estimate_cycles
    from ctxconv.runtimes.firmware.trace import InstructionMix, base_mnemonic

    assert [base_mnemonic(o) for o in ("bne.w", "ldrsb.w", "addgt", "smlal", "teq")] == [
        "b", "ldrsb", "add", "smlal", "teq"]
    mix = InstructionMix({"f": Counter({("nop", ""): 10, ("subs", "r0, #1"): 5,
                                        ("b", "#0x10"): 5, ("ldrd", "r2, r3, [r4], #8"): 4,
                                        ("smlad", "r0, r1, r2, r0"): 8, ("ldr", "r1, [r2]"): 3,
                                        ("pop", "{r4, r5, r6, pc}"): 1, ("sdiv", "r0, r1"): 1})})
    mix.taken["f"], mix.not_taken["f"] = 5, 1  # 4 of the b's and the pop; one b falls through
    m4 = 10 + 5 + 4 * 3 + 8 + 3 * 2 + (1 + 4) + 7 + 5 * 3 + 1 * 1
    assert estimate_cycles(mix, TIMINGS["cortex-m4f"]) == m4
    m0 = 10 + 5 + 4 * 2 + 8 + 3 * 2 + (1 + 4) + 32 + 5 * 2 + 1 * 1
    assert estimate_cycles(mix, TIMINGS["cortex-m0plus"]) == m0


@needs_arm
def test_a_traced_run_that_fails_or_hangs_is_a_clear_error(probe, tmp_path):
    """QEMU failing before it opens its log, or running past the limit, ends the trace with
    an error that says so (the reader of the log pipe does not wait for ever)."""
    import dataclasses
    import time

    from ctxconv.runtimes.firmware.targets import FirmwareError
    from ctxconv.runtimes.firmware.trace import trace_program

    build, _ = probe
    start = time.monotonic()
    with pytest.raises(FirmwareError, match="traced run on .* failed"):
        trace_program(tmp_path / "missing.elf", build.target, tmp_path, 20.0)
    bogus = dataclasses.replace(build.target, machine="no-such-board")  # fails before its log
    with pytest.raises(FirmwareError, match=r"traced run on .*no-such-board.* failed"):
        trace_program(build.elf, bogus, tmp_path, 20.0)
    (tmp_path / "inputs.bin").write_bytes(b"")
    with pytest.raises(FirmwareError, match="killed after the time limit"):
        trace_program(build.elf, build.target, tmp_path, 0.05)  # QEMU alone takes longer
    assert time.monotonic() - start < 15
