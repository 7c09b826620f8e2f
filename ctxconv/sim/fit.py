"""Fit verdicts: does a planned pipeline fit an MCU profile, and if not, what to change.

The plans themselves (``ctxconv.memory.tflm``) are arithmetic on plain numbers; this
module sets them against a profile's SRAM, arena and flash limits and writes the prose.
"""

from __future__ import annotations

from ctxconv.blockgraph.ir import BlockGraph
from ctxconv.memory.tflm import MemoryPlan, PipelinePlan, plan_block, plan_pipeline
from ctxconv.memory.tflm_overhead import MCU_32BIT_OVERHEAD
from ctxconv.sim.profiles import McuProfile, list_profiles, load_profile


class DoesNotFitError(ValueError):
    """A model or pipeline needs more SRAM or flash than an MCU profile offers."""


def plan_block_on(profile: McuProfile, graph: BlockGraph,
                  tflite_bytes: bytes | None = None) -> MemoryPlan:
    """One block planned for ``profile``: its kernel library's scratch, TFLM's 32-bit
    bookkeeping (modelled)."""
    return plan_block(graph, tflite_bytes, profile.scratch, MCU_32BIT_OVERHEAD)


def plan_on(profile: McuProfile, graphs: list[BlockGraph], context_size: int,
            tflite: list[bytes] | None = None, shared_arena: bool = True) -> PipelinePlan:
    """A pipeline planned for ``profile`` (see ``plan_block_on``)."""
    return plan_pipeline(graphs, context_size, tflite, profile.scratch, shared_arena,
                         MCU_32BIT_OVERHEAD)


def without_scratch(plan: PipelinePlan) -> PipelinePlan:
    """The same pipeline planned with no kernel-library scratch (TFLM's reference kernels)."""
    return plan_pipeline(plan.graphs, plan.context_size, plan.tflite, None, plan.shared_arena,
                         MCU_32BIT_OVERHEAD)


def scratch_bytes(plan: PipelinePlan) -> int:
    """Bytes of ``plan``'s arena that are there for the kernel library's scratch buffers."""
    return max(0, plan.arena_bytes - without_scratch(plan).arena_bytes)


def problems(plan: PipelinePlan, profile: McuProfile) -> list[str]:
    """What exceeds ``profile`` (empty when the pipeline fits)."""
    out = []
    if plan.sram_bytes > profile.available_sram_bytes:
        out.append(
            f"SRAM: needs {plan.sram_bytes:,} B but {profile.available_sram_bytes:,} B are "
            f"available ({profile.sram_bytes:,} B - {profile.reserved_sram_bytes:,} B reserved "
            "for stack and runtime)"
        )
    if plan.arena_bytes > profile.arena_limit_bytes:
        out.append(
            f"arena: needs {plan.arena_bytes:,} B of contiguous SRAM but the largest region "
            f"available for it is {profile.arena_limit_bytes:,} B"
        )
    if plan.flash_bytes > profile.available_flash_bytes:
        out.append(
            f"flash: needs {plan.flash_bytes:,} B but {profile.available_flash_bytes:,} B are "
            f"available ({profile.flash_bytes:,} B - {profile.reserved_flash_bytes:,} B for "
            "TFLM and application code)"
        )
    return out


def fits(plan: PipelinePlan, profile: McuProfile) -> bool:
    return not problems(plan, profile)


def verdict_line(plan: PipelinePlan, profile: McuProfile) -> str:
    """``fits NAME`` or ``does NOT fit NAME`` with what is exceeded."""
    bad = problems(plan, profile)
    verdict = "fits" if not bad else "does NOT fit"
    return f"{verdict} {profile.name}" + "".join(f"\n    {m}" for m in bad)


def require_fit(plan: PipelinePlan, profile: McuProfile) -> None:
    """Raise DoesNotFitError with a per-tensor breakdown if ``profile`` is exceeded."""
    bad = problems(plan, profile)
    if bad:
        raise DoesNotFitError(explain(plan, profile, bad))


def explain(plan: PipelinePlan, profile: McuProfile, problems: list[str]) -> str:
    """The DoesNotFitError message: what is exceeded, by which tensors, what to change."""
    lines = [f"pipeline does not fit {profile.name} ({profile.description or profile.core}):"]
    lines += [f"  {m}" for m in problems]
    lines.append(
        f"  SRAM breakdown: arena {plan.arena_bytes:,} B "
        f"({'shared by all blocks' if plan.shared_arena else 'one per block'}), boundary "
        f"staging {plan.staging_bytes:,} B, context {plan.context_bytes} B, scores "
        f"{plan.score_bytes} B"
    )
    worst = max(plan.blocks, key=lambda b: b.head_bytes)
    for b in plan.blocks:
        mark = "  <- largest head" if b is worst else ""
        lines.append(
            f"    block {b.name!r}: head {b.head_bytes:,} B (activations/scratch), tail "
            f"{b.tail_bytes:,} B (TFLM), flash {b.flash_bytes:,} B{mark}"
        )
    lines.append(f"  largest arena tensors of block {worst.name!r}:")
    for t in worst.largest(6):
        lines.append(
            f"    {t.name:<20} {t.kind:<10} {str(t.shape):<18} {t.dtype:<6} {t.nbytes:>9,} B "
            f"live ops {t.first_op}-{t.last_op}"
        )
    flash_hungry = sorted(
        (t for b in plan.blocks for t in b.tensors if t.kind == "constant"),
        key=lambda t: -t.nbytes,
    )[:4]
    if any("flash" in m for m in problems):
        lines.append("  largest constants (flash):")
        lines += [f"    {t.name:<20} {str(t.shape):<18} {t.nbytes:>9,} B" for t in flash_hungry]
    lines.append("  what to change:")
    if any(m.startswith(("SRAM", "arena")) for m in problems):
        lines += _sram_advice(plan, profile, worst)
        if not plan.shared_arena:
            lines.append("    - share one arena between blocks (shared_arena=True)")
    if any(m.startswith("flash") for m in problems):
        over = plan.flash_bytes - profile.available_flash_bytes
        lines.append(
            f"    - cut at least {over:,} B of flash: fewer or narrower conv/FC layers "
            "(their weights, listed above, dominate the files)"
        )
    others = [n for n in fitting_profiles(plan) if n != profile.name]
    lines.append(
        "    - or use an MCU that fits: " + (", ".join(others) if others else "none of the known")
    )
    return "\n".join(lines)


def _sram_advice(plan: PipelinePlan, profile: McuProfile, worst: MemoryPlan) -> list[str]:
    """What closes the SRAM / arena gap, each proposal with what it saves; only a change
    that saves the whole gap is said to close it."""
    over = max(plan.sram_bytes - profile.available_sram_bytes,
               plan.arena_bytes - profile.arena_limit_bytes)
    bare = without_scratch(plan)
    scratch = max(0, plan.arena_bytes - bare.arena_bytes)
    bare_over = max(bare.sram_bytes - profile.available_sram_bytes,
                    bare.arena_bytes - profile.arena_limit_bytes)
    lines = [f"    - cut at least {over:,} B of SRAM; what each change below saves:"]
    acts = [t for t in worst.largest(6) if t.kind == "activation"]
    halving = acts[0].nbytes // 2 if acts else 0
    if scratch:
        big = max((t for b in plan.blocks for t in b.tensors if t.kind == "scratch"),
                  key=lambda t: t.nbytes)
        verdict = ("closes the gap" if bare_over <= 0
                   else f"not enough alone ({bare_over:,} B would still be missing)")
        lead = ("kernel scratch dominates: " if scratch >= halving else "")
        lines.append(
            f"    - {lead}{scratch:,} B of the {plan.arena_bytes:,} B arena is scratch that "
            f"the {profile.kernel_library} kernels request (largest: {big.name!r}, "
            f"{big.nbytes:,} B); a kernel library that needs no scratch (an MCU profile "
            f"with another kernel_library and no scratch section, e.g. TFLM's reference "
            f"kernels: slower) saves it: {verdict}"
        )
    if acts:
        big = acts[0]
        enough = ("closes the gap on its own" if halving >= over
                  else f"not enough alone ({over - halving:,} B would still be missing)")
        lines.append(
            f"    - in block {worst.name!r}, {big.name!r} {big.shape} is the largest "
            f"activation; halving its channels or its resolution (stride 2, or pool earlier) "
            f"saves at most about {halving:,} B: {enough}"
        )
    return lines


def fitting_profiles(plan: PipelinePlan) -> list[str]:
    """Known profiles on which the same blocks fit (re-planned for their scratch)."""
    names = []
    for name in list_profiles():
        try:
            p = load_profile(name)
            other = plan_on(p, plan.graphs, plan.context_size, plan.tflite, plan.shared_arena)
        except ValueError:
            continue
        if fits(other, p):
            names.append(name)
    return names
