"""Run a block model file (TFLite or ONNX) on a batch, the same way for every runtime.

Every runner takes the model as bytes or a path, exposes ``input_names`` and
``output_names``, and ``run({name: array (N, ...)}) -> {name: array (N, ...)}``.
TFLite runtimes are batch-1, so they loop over the N samples; onnxruntime runs the
whole batch. TFLite bytes are validated by the block-graph reader
(``ctxconv.blockgraph.tflite.reader.read_tflite``) before a runtime sees them, because
TFLM crashes on malformed models. A too-small TFLM arena also
crashes the process, so ``tflm_min_arena`` and ``run_tflm_isolated`` probe TFLM in
child processes. The runtimes are imported lazily, when a runner is built; torch is
never imported.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctxconv.blockgraph.ir import BlockGraph, ModelFileError
from ctxconv.blockgraph.tflite.reader import read_tflite
from ctxconv.progress import ThrottledBar
from ctxconv.workdirs import work_directory

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "LiteRTRunner",
    "ModelFileError",
    "OnnxRunner",
    "TFLMRunner",
    "TensorSpec",
    "read_tflite_io",
    "run_tflm_isolated",
    "tflm_min_arena",
]

Model = bytes | bytearray | str | os.PathLike


def _load(model: Model, name: str | None) -> tuple[bytes, str]:
    """(bytes, display name) of a model given as bytes or a path."""
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model), name or "<model bytes>"
    path = Path(model)
    try:
        return path.read_bytes(), name or str(path)
    except OSError as exc:
        raise ModelFileError(f"cannot read model file {path}: {exc}") from exc


@dataclass(frozen=True)
class TensorSpec:
    """A model input or output: name, shape (batch 1), numpy dtype, quantization."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()


def _specs(graph: BlockGraph, names: list[str]) -> list[TensorSpec]:
    specs = []
    for n in names:
        t = graph.tensors[n]
        q = t.quant
        scale = () if q is None else tuple(float(s) for s in q.scale)
        zps = () if q is None else tuple(int(z) for z in q.zero_point)
        specs.append(TensorSpec(n, tuple(t.shape), t.dtype, scale, zps))
    return specs


def _io(data: bytes, name: str) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of validated TFLite bytes; ModelFileError if they are not."""
    graph = read_tflite(data, name=name)
    return _specs(graph, graph.inputs), _specs(graph, graph.outputs)


def read_tflite_io(model: Model) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Validated (inputs, outputs) specs of a TFLite block model."""
    data, name = _load(model, None)
    return _io(data, name)


@contextlib.contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence fd 1 (C/C++ printf included) for the duration of the block."""
    import ctypes

    sys.stdout.flush()
    libc = ctypes.CDLL(None)
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def _check_batch(
    runtime: str, name: str, specs: list[TensorSpec], inputs: dict[str, np.ndarray]
) -> tuple[list[np.ndarray], int]:
    """Input arrays in model order and the batch size; ValueError on any mismatch."""
    import numpy as np

    names = [s.name for s in specs]
    if set(inputs) != set(names):
        raise ValueError(f"{runtime} ({name}): inputs {sorted(inputs)} do not match {names}")
    arrays, batch = [], None
    for spec in specs:
        a = np.asarray(inputs[spec.name])
        want = spec.shape[1:]
        dims_ok = a.ndim == len(spec.shape) and all(
            d < 0 or d == s for d, s in zip(want, a.shape[1:], strict=True)
        )
        if a.dtype != np.dtype(spec.dtype) or not dims_ok:
            raise ValueError(
                f"{runtime} ({name}): input {spec.name!r} must be {spec.dtype} "
                f"(N, {', '.join(map(str, want))}), got {a.dtype} {a.shape}"
            )
        if batch is not None and a.shape[0] != batch:
            raise ValueError(f"{runtime} ({name}): inputs differ in batch size")
        batch = a.shape[0]
        arrays.append(np.ascontiguousarray(a))
    return arrays, int(batch or 0)


class _Runner:
    """Shared batching and input checking; subclasses set ``_inputs``/``_outputs``."""

    runtime = "runtime"
    _inputs: list[TensorSpec]
    _outputs: list[TensorSpec]
    name: str

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self._inputs]

    @property
    def output_names(self) -> list[str]:
        return [s.name for s in self._outputs]

    @property
    def input_specs(self) -> list[TensorSpec]:
        return list(self._inputs)

    @property
    def output_specs(self) -> list[TensorSpec]:
        return list(self._outputs)

    def _check_inputs(self, inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray], int]:
        return _check_batch(self.runtime, self.name, self._inputs, inputs)

    def _run_one(self, sample: list[np.ndarray]) -> list[np.ndarray]:
        raise NotImplementedError

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run a batch: arrays (N, ...) per input name -> arrays (N, ...) per output name."""
        import numpy as np

        arrays, n = self._check_inputs(inputs)
        if n == 0:
            return {s.name: np.zeros((0, *s.shape[1:]), np.dtype(s.dtype)) for s in self._outputs}
        results: list[list[np.ndarray]] = [[] for _ in self._outputs]
        for k in range(n):
            try:
                outs = self._run_one([a[k : k + 1] for a in arrays])
            except Exception as exc:
                raise RuntimeError(f"{self.runtime} failed to run {self.name}: {exc}") from exc
            for acc, o in zip(results, outs, strict=True):
                acc.append(np.array(o, copy=True))
        return {
            s.name: np.concatenate(r, axis=0) for s, r in zip(self._outputs, results, strict=True)
        }


class LiteRTRunner(_Runner):
    """LiteRT (or tflite_runtime) interpreter; reference kernels by default.

    With ``reference_kernels`` the BUILTIN_REF op resolver is used: its conv, pool
    and add kernels are bit-exact with TFLM. Its int8 FULLY_CONNECTED rounds the
    requantization once (64-bit), TFLM twice (gemmlowp), so FC outputs can differ
    from TFLM by 1 LSB on rare ties.
    """

    runtime = "LiteRT"

    def __init__(
        self, model: Model, reference_kernels: bool = True, name: str | None = None
    ) -> None:
        data, self.name = _load(model, name)
        self._inputs, self._outputs = _io(data, self.name)
        try:
            from ai_edge_litert import interpreter as lite
        except ImportError:  # pragma: no cover - depends on what is installed
            from tflite_runtime import interpreter as lite  # type: ignore[no-redef]
        kwargs: dict[str, Any] = {}
        resolver = getattr(lite, "OpResolverType", None)
        if reference_kernels:
            if resolver is None:  # pragma: no cover
                raise RuntimeError("this LiteRT/tflite_runtime has no BUILTIN_REF op resolver")
            kwargs["experimental_op_resolver_type"] = resolver.BUILTIN_REF
        try:
            self._interp = lite.Interpreter(model_content=data, **kwargs)
            self._interp.allocate_tensors()
        except Exception as exc:
            raise ModelFileError(f"LiteRT cannot load {self.name}: {exc}") from exc
        by_name = {d["name"]: d["index"] for d in self._interp.get_input_details()}
        self._in_idx = [by_name[s.name] for s in self._inputs]
        self._out_idx = [d["index"] for d in self._interp.get_output_details()]

    def _run_one(self, sample: list[np.ndarray]) -> list[np.ndarray]:
        for idx, a in zip(self._in_idx, sample, strict=True):
            self._interp.set_tensor(idx, a)
        self._interp.invoke()
        return [self._interp.get_tensor(i) for i in self._out_idx]


class TFLMRunner(_Runner):
    """TFLite Micro's Python interpreter (reference kernels) with a fixed arena.

    TFLM crashes the process when the arena is too small, so unless
    ``check_arena`` is False the arena is first tried in a child process.
    """

    runtime = "TFLM"

    def __init__(
        self, model: Model, arena_size: int, name: str | None = None, check_arena: bool = True
    ) -> None:
        data, self.name = _load(model, name)
        self._inputs, self._outputs = _io(data, self.name)
        self.arena_size = int(arena_size)
        if check_arena:
            with work_directory("ctxconv-tflm-") as tmp:
                path = Path(tmp) / "model.tflite"
                path.write_bytes(data)
                ok, _, err = _probe_many(path, [self.arena_size], len(self._inputs))[0]
            if not ok:
                raise RuntimeError(
                    f"TFLM cannot run {self.name} with a {self.arena_size}-byte arena "
                    f"(see tflm_min_arena): {err}"
                )
        from tflite_micro import runtime

        try:
            with _quiet_stdout():
                self._interp = runtime.Interpreter.from_bytes(data, arena_size=self.arena_size)
        except Exception as exc:
            raise RuntimeError(f"TFLM cannot load {self.name}: {exc}") from exc

    def _run_one(self, sample: list[np.ndarray]) -> list[np.ndarray]:
        for i, a in enumerate(sample):
            self._interp.set_input(a, i)
        self._interp.invoke()
        return [self._interp.get_output(i) for i in range(len(self._outputs))]


class OnnxRunner(_Runner):
    """onnxruntime InferenceSession on CPU; runs the whole batch in one call."""

    runtime = "onnxruntime"

    def __init__(self, model: Model, name: str | None = None, threads: int = 0) -> None:
        import onnxruntime as ort

        data, self.name = _load(model, name)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        try:
            self._sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelFileError(f"onnxruntime cannot load {self.name}: {exc}") from exc
        self._inputs = [self._spec(a) for a in self._sess.get_inputs()]
        self._outputs = [self._spec(a) for a in self._sess.get_outputs()]

    @staticmethod
    def _spec(arg: Any) -> TensorSpec:
        m = re.fullmatch(r"tensor\((\w+)\)", arg.type)
        dtype = {"float": "float32", "double": "float64"}.get(m.group(1), m.group(1)) if m else ""
        shape = tuple(d if isinstance(d, int) else -1 for d in arg.shape)
        return TensorSpec(arg.name, shape, dtype)

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        arrays, _ = self._check_inputs(inputs)
        feeds = dict(zip(self.input_names, arrays, strict=True))
        try:
            outs = self._sess.run(self.output_names, feeds)
        except Exception as exc:
            raise RuntimeError(f"onnxruntime failed to run {self.name}: {exc}") from exc
        return dict(zip(self.output_names, outs, strict=True))


# --------------------------------------------------------------------------- TFLM in a child

# Child process. argv: model path, arena size, #inputs, #outputs, inputs .npz, outputs .npz.
# With inputs "-" it feeds zeros once and reports TFLM's recorded arena total (probe);
# else it runs the batch and saves the outputs. Its last stdout line is "ok <total>" or
# "fail <reason>"; TFLM's own printing goes to /dev/null.
_CHILD = r"""
import os, sys
import numpy as np
from tflite_micro import runtime
path, arena, n_in, n_out, in_path, out_path = sys.argv[1:7]
arena, n_in, n_out = int(arena), int(n_in), int(n_out)
report_fd = os.dup(1)
os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
def report(msg):
    os.write(report_fd, (msg + "\n").encode())
try:
    interp = runtime.Interpreter.from_bytes(open(path, "rb").read(), arena_size=arena)
    if in_path == "-":
        for i in range(n_in):
            d = interp.get_input_details(i)
            interp.set_input(np.zeros(d["shape"], d["dtype"]), i)
        interp.invoke()
        r, w = os.pipe()
        err_fd = os.dup(2)
        os.dup2(w, 2)
        interp.print_allocations()
        os.dup2(err_fd, 2)
        os.close(w)
        text = os.read(r, 1 << 16).decode(errors="replace")
        total = [int(t) for t in text.split() if t.isdigit()][:1] or [-1]
        report("ok %d" % total[0])
    else:
        data = np.load(in_path)
        xs = [data["in%d" % i] for i in range(n_in)]
        outs = [[] for _ in range(n_out)]
        for k in range(xs[0].shape[0]):
            for i, x in enumerate(xs):
                interp.set_input(x[k : k + 1], i)
            interp.invoke()
            for j in range(n_out):
                outs[j].append(np.array(interp.get_output(j), copy=True))
        np.savez(out_path, **{"out%d" % j: np.concatenate(o) for j, o in enumerate(outs)})
        report("ok -1")
except Exception as exc:
    report("fail " + repr(exc).replace("\n", " "))
    sys.exit(3)
"""


def _child_cmd(
    path: Path, arena: int, n_in: int, n_out: int, inp: str = "-", out: str = "-"
) -> list[str]:
    return [sys.executable, "-c", _CHILD, str(path), str(arena), str(n_in), str(n_out), inp, out]


def _describe(rc: int, stdout: str, stderr: str) -> str:
    """Why a child failed, from its exit status and output."""
    import signal

    if rc < 0:
        try:
            return f"TFLM crashed ({signal.Signals(-rc).name})"
        except ValueError:
            return f"TFLM crashed (signal {-rc})"
    line = next((ln for ln in stdout.splitlines() if ln.startswith("fail ")), "")
    tail = " ".join(stderr.strip().splitlines()[-3:])
    return (line[5:] or f"exit status {rc}") + (f" [{tail}]" if tail else "")


def _probe_many(path: Path, arenas: list[int], n_in: int) -> list[tuple[bool, int, str]]:
    """Try each arena size in its own child, all in parallel.

    Returns (works, TFLM's recorded arena total or -1, failure reason) per size.
    """
    procs = [
        subprocess.Popen(
            _child_cmd(path, a, n_in, 0), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for a in arenas
    ]
    results = []
    for p in procs:
        out, err = p.communicate()
        last = out.strip().splitlines()[-1:] or [""]
        ok = p.returncode == 0 and last[0].startswith("ok ")
        total = int(last[0].split()[1]) if ok else -1
        results.append((ok, total, "" if ok else _describe(p.returncode, out, err)))
    return results


def _arena_related(err: str) -> bool:
    return "crashed" in err or "alloc" in err.lower() or "arena" in err.lower()


def tflm_min_arena(
    model: Model,
    lo: int | None = None,
    hi: int | None = None,
    granularity: int = 16,
    jobs: int | None = None,
) -> int:
    """Smallest arena size (bytes, a multiple of ``granularity``) with which TFLM can
    allocate and invoke ``model``.

    Each probe runs in its own child process (a too-small arena can crash TFLM);
    ``jobs`` probes run in parallel per round (k-ary search). ``lo`` (assumed to
    fail) defaults to the largest activation tensor; ``hi`` to a bound from the
    tensor sizes, grown while the failure looks arena-related. TFLM's
    ``print_allocations`` total is below the real minimum, so it only places the first
    probes. The result works; result - granularity failed or is at most ``lo``.
    Raises RuntimeError if TFLM cannot run the model at all.
    """
    data, name = _load(model, None)
    graph = read_tflite(data, name=name)
    ins = graph.inputs
    g = int(granularity)
    acts = [t.nbytes for t in graph.activations()]
    lo = max(int(lo if lo is not None else max(acts, default=0)), 0)
    hi = int(hi if hi is not None else 4 * sum(acts) + 64 * 1024)
    k = max(3, min(8, jobs or os.cpu_count() or 2))
    with work_directory("ctxconv-tflm-") as tmp:
        path = Path(tmp) / "model.tflite"
        path.write_bytes(data)
        ok, total, err = _probe_many(path, [hi], len(ins))[0]
        while not ok and hi < (1 << 28) and _arena_related(err):
            hi *= 4
            ok, total, err = _probe_many(path, [hi], len(ins))[0]
        if not ok:
            raise RuntimeError(f"TFLM cannot run {name} even with a {hi}-byte arena: {err}")
        lo_u, hi_u = lo // g, -(-hi // g)  # in units of g: lo_u fails (assumed), hi_u works
        # first round: just above the recorded total, where the minimum usually is
        first = [total // g + d for d in (0, 8, 32, 128, 512, 2048)]
        pts = [p for p in first if lo_u < p < hi_u][:k]
        with ThrottledBar(None, f"TFLM minimum arena of {name}", unit="probe") as bar:
            while hi_u - lo_u > 1:
                if not pts:
                    span = hi_u - lo_u
                    n = min(k, span - 1)
                    pts = sorted({lo_u + (span * (i + 1)) // (n + 1) for i in range(n)})
                res = _probe_many(path, [p * g for p in pts], len(ins))
                good = [p for p, r in zip(pts, res, strict=True) if r[0]]
                hi_u = min([hi_u, *good])
                bad = [p for p, r in zip(pts, res, strict=True) if not r[0] and p < hi_u]
                lo_u = max([lo_u, *bad])
                bar.step(f"{(hi_u - lo_u) * g} B left", n=len(pts))
                pts = []
        return hi_u * g


def run_tflm_isolated(
    model: Model, inputs: dict[str, np.ndarray], arena_size: int, timeout: float = 120.0
) -> dict[str, np.ndarray]:
    """Run TFLM on a batch in a child process; a crash becomes a RuntimeError.

    Same contract as ``TFLMRunner.run``; the parent never loads TFLM.
    """
    import numpy as np

    data, name = _load(model, None)
    specs_in, specs_out = _io(data, name)
    arrays, n = _check_batch("TFLM", name, specs_in, inputs)
    if n == 0:
        return {s.name: np.zeros((0, *s.shape[1:]), s.dtype) for s in specs_out}
    with work_directory("ctxconv-tflm-") as tmp:
        path, inp, out = Path(tmp) / "model.tflite", Path(tmp) / "in.npz", Path(tmp) / "out.npz"
        path.write_bytes(data)
        np.savez(inp, **{f"in{i}": a for i, a in enumerate(arrays)})
        cmd = _child_cmd(path, int(arena_size), len(arrays), len(specs_out), str(inp), str(out))
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"TFLM timed out after {timeout} s running {name}") from exc
        if p.returncode != 0:
            why = _describe(p.returncode, p.stdout, p.stderr)
            hint = " (is the arena too small? see tflm_min_arena)" if p.returncode < 0 else ""
            raise RuntimeError(f"TFLM failed on {name} with a {arena_size}-byte arena: {why}{hint}")
        with np.load(out) as res:
            return {s.name: res[f"out{j}"] for j, s in enumerate(specs_out)}
