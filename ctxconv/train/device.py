"""Where training runs: device choice, mixed precision, CPU threads, memory budgets.

``trainer.device=auto|cpu|cuda|mps`` (auto: CUDA, else MPS, else CPU) and
``trainer.precision=fp32|bf16`` (bf16 autocast where the device supports it). Every
unsupported choice is a ``DeviceError`` with a one-line message that says what to do.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("fp32", "bf16")
MAX_DEFAULT_THREADS = 8  # the convolutions here are small: more threads gain little


class DeviceError(ValueError):
    """A device or precision that this machine cannot provide."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """The torch device ``trainer.device`` names; ``local_rank`` picks the GPU under torchrun."""
    if name not in DEVICES:
        raise DeviceError(f"unknown trainer.device {name!r}; choose one of {list(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                "trainer.device=cuda but torch sees no CUDA GPU (torch.cuda.is_available() is "
                "False); use trainer.device=auto or cpu"
            )
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise DeviceError(
                f"local rank {local_rank} has no GPU of its own (this node has {count}); "
                f"start at most {count} processes per node (torchrun --nproc-per-node {count})"
            )
        return torch.device("cuda", local_rank)
    if name == "mps" and not _mps_available():
        raise DeviceError(
            "trainer.device=mps but torch.backends.mps.is_available() is False (Apple GPU "
            "only); use trainer.device=auto or cpu"
        )
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run (before any training starts)."""
    if precision not in PRECISIONS:
        raise DeviceError(
            f"unknown trainer.precision {precision!r}; choose one of {list(PRECISIONS)}"
        )
    if precision == "fp32":
        return
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(
            f"trainer.precision=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16 "
            "support; use trainer.precision=fp32"
        )
    if device.type == "cpu" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise DeviceError(
            "trainer.precision=bf16 but this CPU has no bfloat16 kernels (oneDNN needs "
            "AVX-512 or AMX); use trainer.precision=fp32"
        )
    if device.type == "mps":
        try:
            with torch.autocast("mps", dtype=torch.bfloat16):
                pass
        except RuntimeError as exc:
            raise DeviceError(
                "trainer.precision=bf16 is not supported on mps here "
                f"({str(exc).splitlines()[0]}); use trainer.precision=fp32"
            ) from exc


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` for ``precision=bf16``, else a no-op."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_threads(cores: int | None = None) -> int:
    """Intra-op threads when ``threads`` is unset: one core left to the rest of the machine.

    An OpenMP parallel region waits for its slowest thread, so a thread that shares a core
    with another busy process stalls every step (BENCHMARKS.md: digits 10x slower with one
    busy core on 2 cores at 2 threads). ``OMP_NUM_THREADS``, when set, wins.
    """
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    if cores is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min((cores or 1) - 1, MAX_DEFAULT_THREADS))


def available_memory(device: torch.device) -> int:
    """Bytes free on ``device`` now (host: MemAvailable), 0 when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError):
        return 0


def to_cpu(obj: Any) -> Any:
    """A copy of ``obj`` with every tensor detached and on the CPU (device-free checkpoints)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


@contextlib.contextmanager
def threads(n: int | None) -> Iterator[int]:
    """Run with ``n`` intra-op threads (``None``: ``default_threads()``), then restore."""
    before = torch.get_num_threads()
    n = n or default_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
