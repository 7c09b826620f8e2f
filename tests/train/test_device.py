"""Device, precision and thread choices: clear errors, device-free checkpoints, bf16 learns."""

import pytest
import torch
from tiny_runs import small_app

from ctxconv.train.device import (
    DeviceError,
    check_precision,
    default_threads,
    resolve_device,
    threads,
    to_cpu,
)
from ctxconv.train.run import train_run


def test_device_names_resolve_or_fail_clearly(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match=r"unknown trainer.device 'tpu'; choose one of \['auto'"):
        resolve_device("tpu")
    with pytest.raises(DeviceError, match=r"trainer.device=cuda but torch sees no CUDA GPU"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match=r"trainer.device=mps but .*Apple GPU only"):
        resolve_device("mps")


def test_auto_prefers_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto", local_rank=1) == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match=r"local rank 2 has no GPU of its own \(this node has 2"):
        resolve_device("cuda", local_rank=2)


def test_precision_checks(monkeypatch):
    cpu = torch.device("cpu")
    check_precision("fp32", cpu)
    with pytest.raises(DeviceError, match=r"unknown trainer.precision 'fp16'; choose one of"):
        check_precision("fp16", cpu)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    with pytest.raises(DeviceError, match=r"precision=bf16 but this CPU has no bfloat16 kernels"):
        check_precision("bf16", cpu)


def test_unavailable_device_stops_a_run_before_it_writes(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        train_run(small_app(device="cuda"), tmp_path)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no CPU bf16")
def test_bf16_autocast_learns(tmp_path):
    cfg = small_app(precision="bf16", epochs=4)
    summary = train_run(cfg, tmp_path)
    assert summary["precision"] == "bf16"
    assert summary["test_accuracy"]["onepass"] > 0.8, summary["test_accuracy"]


def test_default_threads_leave_a_core(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [default_threads(c) for c in (1, 2, 4, 64)] == [1, 1, 3, 8]
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert default_threads(64) == 5
    before = torch.get_num_threads()
    with threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_to_cpu_copies_nested_state():
    state = {"w": torch.ones(2, requires_grad=True) * 2, "groups": [{"lr": 0.1, "params": [0]}],
             "betas": (0.9, 0.99)}
    out = to_cpu(state)
    assert out["w"].device.type == "cpu" and not out["w"].requires_grad
    assert out["groups"] == state["groups"] and out["betas"] == (0.9, 0.99)
