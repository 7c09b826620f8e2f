"""The executed instruction mix of a program under QEMU, per function.

QEMU's ``-d in_asm,exec,nochain`` log names every translated block once (its instructions,
disassembled) and every execution of a block (``nochain``: also those that would chain
straight into the next). Read as a stream through a pipe, it gives, per function, how often
each instruction ran, and for a block ending in a branch whether the next block executed
was the fall-through (not taken) or not (taken). The mix is exact for the code QEMU runs;
what it costs in cycles is ``cycles.py``'s estimate.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ctxconv.runtimes.firmware.targets import ArmTarget, FirmwareError
from ctxconv.runtimes.firmware.toolchain import die_with_parent, find

_INSN = re.compile(r"0x([0-9a-f]+):\s+((?:[0-9a-f]{4} ?){1,2})\s+(\S+)\s*(.*)")
_EXEC = re.compile(r"Trace \d+: \S+ \[[0-9a-f]+/([0-9a-f]+)/")
_BRANCHES = ("b", "bl", "blx", "bx", "cbz", "cbnz", "tbb", "tbh")
_CONDS = ("eq", "ne", "cs", "hs", "cc", "lo", "mi", "pl", "vs", "vc", "hi", "ls", "ge", "lt",
          "gt", "le", "al")


def base_mnemonic(op: str) -> str:
    """``bne.w`` -> ``b``, ``ldrsb.w`` -> ``ldrsb``, ``addgt`` -> ``add`` (width and condition
    suffixes dropped; a flag-setting ``s`` kept, the timing tables fold it)."""
    op = op.split(".")[0].lower()
    for cond in _CONDS:
        if op.endswith(cond) and op[: -len(cond)] in _BRANCHES + ("add", "mov", "sub", "ldr",
                                                                   "str", "orr", "and", "mvn"):
            return op[: -len(cond)]
    return op


@dataclass
class Block:
    """A translated block: its function, instructions (mnemonic, operands), and the address
    after its last instruction."""

    function: str
    insns: list[tuple[str, str]]
    end: int


@dataclass
class InstructionMix:
    """Executed instructions per function: (mnemonic, operands) -> count, and branches at
    block ends by outcome."""

    counts: dict[str, Counter] = field(default_factory=dict)
    taken: Counter = field(default_factory=Counter)  # function -> taken branches
    not_taken: Counter = field(default_factory=Counter)

    def instructions(self, functions: set[str] | None = None) -> int:
        return sum(sum(c.values()) for f, c in self.counts.items()
                   if functions is None or f in functions)


def _parse(lines, mix: InstructionMix) -> None:
    blocks: dict[int, Block] = {}
    current: Block | None = None
    start = last_size = last_addr = 0
    previous: Block | None = None
    for line in lines:
        if line.startswith("IN:"):
            current, start = Block(line[3:].strip() or "?", [], 0), -1
            continue
        if current is not None:
            m = _INSN.match(line)
            if m:
                addr = int(m[1], 16)
                if start < 0:
                    start = addr
                last_addr, last_size = addr, 2 * len(m[2].split())
                current.insns.append((base_mnemonic(m[3]), m[4]))
                continue
            if current.insns:
                current.end = last_addr + last_size
                blocks[start] = current
            current = None
        m = _EXEC.match(line)
        if not m:
            continue
        pc = int(m[1], 16)
        block = blocks.get(pc)
        if previous is not None and previous.insns:
            op, args = previous.insns[-1]
            if op in _BRANCHES or (op in ("pop", "ldm") and "pc" in args):
                (mix.taken if pc != previous.end else mix.not_taken)[previous.function] += 1
        if block is None:
            previous = None
            continue
        counts = mix.counts.setdefault(block.function, Counter())
        counts.update(block.insns)
        previous = block


def _watch(proc: subprocess.Popen, fifo: Path, timeout: float, output: list[str]) -> None:
    """Stop QEMU at the time limit, keep its console, and once it has ended open the log
    pipe for writing a moment: a reader still waiting for QEMU to open it (QEMU failed
    first) then sees the end of the log instead of waiting for ever."""
    try:
        output.append(proc.communicate(timeout=timeout)[0] or "")
    except subprocess.TimeoutExpired:
        proc.kill()
        output.append(proc.communicate()[0] or "")
    try:
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
        pass  # nobody reads it any more


def trace_program(elf: Path, target: ArmTarget, cwd: Path, timeout: float) -> InstructionMix:
    """Run ``elf`` on ``target``'s board in ``cwd`` (its input files there) and return the
    executed instruction mix."""
    mix = InstructionMix()
    with tempfile.TemporaryDirectory(prefix="ctxconv-trace-") as tmp:
        fifo = Path(tmp) / "log"
        os.mkfifo(fifo)
        cmd = [find("qemu-system-arm"), "-M", target.machine, "-nographic", "-monitor", "none",
               "-serial", "none", "-semihosting-config", "enable=on,target=native",
               "-icount", "shift=0", "-d", "in_asm,exec,nochain", "-D", str(fifo),
               "-kernel", str(elf)]
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True, preexec_fn=die_with_parent)
        output: list[str] = []
        watcher = threading.Thread(target=_watch, args=(proc, fifo, timeout, output), daemon=True)
        watcher.start()
        try:
            with open(fifo, errors="replace") as log:
                _parse(log, mix)
        finally:
            watcher.join(timeout + 5)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        console = "".join(output)
    if proc.returncode != 0:
        raise FirmwareError(f"traced run on {target.label} failed (exit {proc.returncode}"
                            f"{', killed after the time limit' if proc.returncode < 0 else ''})"
                            f": {console.strip()[-200:]}")
    return mix
