"""Model of the bytes TFLite Micro needs in its tensor arena besides the planned tensors.

Measured against the tflite-micro Python interpreter (64-bit host build with the
recording allocator) by bisecting the smallest arena that allocates and invokes a
model, over random graphs of every supported op. The arena has to hold, at its peak,
one of three phases of ``MicroInterpreter::AllocateTensors``:

* prepare: persistent tail so far + 12 ScratchBufferRequest slots in the head (plus one
  per request of the kernels prepared before) + the temporary TfLiteTensors a kernel's
  Prepare allocates;
* planning: persistent tail so far (with a ScratchBufferHandle per scratch request) + the
  request slots + the AllocationInfo array + the greedy planner's 40 bytes per planned
  buffer (scratch buffers included);
* final: full persistent tail + the planned head (activations and scratch).

Small graphs are limited by the first two, graphs with real feature maps by the last.
Over 550 random graphs (1 to 12 ops, 1 KiB to 200 KiB arenas) the prediction was 0.05 %
to 4.8 % above the measured minimum, never below. ``fixed`` is the fitted 508 B plus a
20 B margin for alignment noise. On a 32-bit MCU TFLM's pointer-sized fields shrink
from 8 to 4 bytes (TfLiteEvalTensor 24 -> 12 B, NodeAndRegistration 64 -> ~32 B, ...),
and the plain MicroAllocator records nothing, so there the model over-estimates by
roughly 12 B per tensor and 40 B per op. ``MCU_32BIT_OVERHEAD`` is that 32-bit model:
the same structures with 4-byte pointers and size_t. It is modelled, not measured (no
32-bit TFLM build runs here); the planner uses it for MCU profiles and the 64-bit fit,
``DEFAULT_OVERHEAD``, wherever it is compared with the host's TFLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ctxconv.blockgraph import ops
from ctxconv.blockgraph.ir import BlockGraph, Op, Tensor
from ctxconv.memory.greedy import align_up


def reference_scratch(graph: BlockGraph, op: Op) -> list[int]:
    """Bytes of each scratch buffer TFLM's reference kernel requests for ``op``
    (``ops.<op>.tflm_scratch``; only the int8 MEAN requests any)."""
    return ops.tflm_scratch(graph, op) if op.kind in ops.REGISTRY else []


def _per_kind(attr: str) -> tuple[tuple[str, int], ...]:
    """(op kind, bytes) of every op module's TFLM persistent bytes ``attr``."""
    return tuple((kind, int(getattr(m, attr))) for kind, m in ops.REGISTRY.items())


@dataclass(frozen=True)
class TflmOverhead:
    """Bytes TFLM keeps in the arena besides the planned tensors.

    Persistent tail (kept for the interpreter's lifetime):
      ``fixed`` (allocator, planner, subgraph tables) + per tensor a TfLiteEvalTensor
      + per op a NodeAndRegistration + the op's builtin params + the kernel's OpData
      (conv/FC: plus per-channel multiplier and shift arrays) + per graph input/output
      a TfLiteTensor, its quantization struct and a pointer + per scratch request a
      ScratchBufferHandle.
    Temporary (during AllocateTensors only):
      prepare: 12 + (requests so far) ScratchBufferRequest slots + the temp TfLiteTensors
      a kernel's Prepare allocates (they are freed only after it: CONV_2D takes 7,
      ConvPrepare's 3 plus CalculateOpDataConv's 4; MEAN 6, its helper's 3 plus
      PrepareSimple's 3); planning: the request slots + one AllocationInfo per tensor and
      per scratch buffer + the greedy planner's 40 B per buffer.
    """

    fixed: int = 528
    eval_tensor: int = 24
    node: int = 64
    io_tensor: int = 64 + 32 + 8
    temp_tensor: int = 64
    temp_quant: int = 24
    request_slot: int = 16
    request_slots: int = 12
    scratch_handle: int = 8
    allocation_info: int = 32
    planner_per_buffer: int = 40
    # builtin params + OpData per op kind (bytes, before the 16-byte rounding)
    builtin: tuple[tuple[str, int], ...] = _per_kind("TFLM_BUILTIN_BYTES")
    op_data: tuple[tuple[str, int], ...] = _per_kind("TFLM_OP_DATA_BYTES")

    def _get(self, table: tuple[tuple[str, int], ...], kind: str, default: int = 0) -> int:
        return dict(table).get(kind, default)

    def op_persistent(self, graph: BlockGraph, op: Op) -> int:
        """Tail bytes one op adds: node, builtin params, OpData, per-channel arrays."""
        n = (
            self.node
            + align_up(self._get(self.builtin, op.kind))
            + align_up(self._get(self.op_data, op.kind))
        )
        if op.kind in ("CONV_2D", "FULLY_CONNECTED"):
            w = graph.tensors[op.inputs[1]]
            per_channel = op.kind == "CONV_2D" or (w.quant is not None and w.quant.scale.size > 1)
            if per_channel:
                n += 2 * align_up(4 * w.shape[0])
        return n

    def tensor_count(self, graph: BlockGraph) -> int:
        """Tensors in the .tflite file: the IR's plus one shape (axes) constant per RESHAPE
        (MEAN)."""
        return len(graph.tensors) + sum(op.kind in ("RESHAPE", "MEAN") for op in graph.ops)

    def tail(self, graph: BlockGraph, n_scratch: int = 0) -> int:
        """Persistent tail bytes after AllocateTensors (``n_scratch`` requests)."""
        n_io = len(graph.inputs) + len(graph.outputs)
        return (
            self.fixed
            + self.eval_tensor * self.tensor_count(graph)
            + sum(self.op_persistent(graph, op) for op in graph.ops)
            + self.io_tensor * n_io
            + align_up(self.scratch_handle * n_scratch)
        )

    def requests(self, n_before: int) -> int:
        """Head bytes of the request slots while a kernel prepares after ``n_before``
        requests (TFLM keeps room for 12 more)."""
        return self.request_slot * (self.request_slots + n_before)

    def _temp(self, t: Tensor) -> int:
        q = 0 if t.quant is None else self.temp_quant + align_up(4 + 4 * t.quant.scale.size, 8)
        return self.temp_tensor + q

    def prepare_temp(self, graph: BlockGraph, op: Op, n_before: int = 0) -> int:
        """Temporary bytes while ``op``'s kernel runs Prepare after ``n_before`` requests.

        Every kernel takes temp copies of its inputs and outputs; CONV_2D's ConvPrepare
        holds output, input and filter while CalculateOpDataConv takes all four again;
        MEAN's PrepareSimple takes input, axes and output again. The axes (and RESHAPE's
        shape) are a file tensor the IR keeps as an option: an int32 temp without quant.
        """
        temps = sum(self._temp(graph.tensors[n]) for n in op.inputs + op.outputs)
        if op.kind == "CONV_2D":
            temps += sum(self._temp(graph.tensors[n]) for n in op.inputs[:2] + op.outputs)
        if op.kind == "MEAN":
            temps = 2 * (temps + self.temp_tensor)
        return self.requests(n_before) + temps

    def planning_temp(self, graph: BlockGraph, n_planned: int, n_scratch: int) -> int:
        """Temporary bytes while TFLM builds the memory plan."""
        return (
            self.requests(n_scratch)
            + align_up(self.allocation_info * (self.tensor_count(graph) + n_scratch))
            + self.planner_per_buffer * n_planned
        )

    def arena(
        self, graph: BlockGraph, head: int, n_planned: int, scratch: Sequence[int] = ()
    ) -> tuple[int, dict[str, int]]:
        """Minimum arena bytes and the per-phase needs behind it.

        ``scratch[i]``: scratch requests of op i (none when empty). final: tail + head;
        prepare/planning: the tail as it is then (without the graph input/output tensors,
        which are allocated last; the scratch handles come just before planning) + that
        phase's temps.
        """
        counts = list(scratch) or [0] * len(graph.ops)
        n_scratch = sum(counts)
        tail = self.tail(graph, n_scratch)
        early_tail = tail - self.io_tensor * (len(graph.inputs) + len(graph.outputs))
        handles = align_up(self.scratch_handle * n_scratch)
        before = [sum(counts[:i]) for i in range(len(graph.ops))]
        prepare = max((self.prepare_temp(graph, op, n) for op, n in zip(graph.ops, before,
                                                                         strict=True)),
                      default=0)
        phases = {
            "final": tail + head,
            "prepare": early_tail - handles + prepare,
            "planning": early_tail + self.planning_temp(graph, n_planned, n_scratch),
        }
        return align_up(max(phases.values())), {"tail": tail, **phases}


#: Fitted to the 64-bit host build of TFLM (what the Python interpreter measures).
DEFAULT_OVERHEAD = TflmOverhead()
#: Modelled for a 32-bit MCU build: pointer and size_t fields at 4 bytes. TfLiteEvalTensor
#: 24 -> 12, NodeAndRegistration 64 -> 32, TfLiteTensor 64 -> 40 and its quantization 32 ->
#: 20, AllocationInfo 32 -> 20, ScratchBufferRequest 16 -> 8, ScratchBufferHandle 8 -> 4;
#: the greedy planner's 40 B per buffer hold no pointers; the fixed allocator/planner
#: objects are estimated at 60 %.
MCU_32BIT_OVERHEAD = TflmOverhead(
    fixed=320, eval_tensor=12, node=32, io_tensor=40 + 20 + 4, temp_tensor=40, temp_quant=12,
    request_slot=8, scratch_handle=4, allocation_info=20,
)  # fmt: skip
