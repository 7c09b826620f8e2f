"""Tiny models trained on digits in seconds, for tests."""

from pathlib import Path


def train_tiny(path: Path, epochs: int = 3, trainer_kw: dict | None = None, **model_kw) -> Path:
    """A two-block digits model (seconds on 2 cores); returns its run directory."""
    from ctxconv.train.config import TrainAppConfig
    from ctxconv.train.data_gen import DataGenConfig
    from ctxconv.train.model import ModelConfig
    from ctxconv.train.run import train_run
    from ctxconv.train.trainer import TrainerConfig

    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="digits", max_train_samples=600)
    cfg.model = ModelConfig(**{"blocks": [[1, 8, 3], [2, 16, 3]], **model_kw})
    cfg.trainer = TrainerConfig(**{"epochs": epochs, "lr": 5e-3, "progress": False,
                                   **(trainer_kw or {})})
    train_run(cfg, path)
    return path


def small_app(blocks=None, max_train_samples: int = 300, **trainer_kw):
    """Digits, a few hundred images, two small blocks, two epochs: a second or two."""
    from ctxconv.train.config import TrainAppConfig
    from ctxconv.train.data_gen import DataGenConfig
    from ctxconv.train.model import ModelConfig
    from ctxconv.train.trainer import TrainerConfig

    cfg = TrainAppConfig()
    cfg.data = DataGenConfig(dataset="digits", batch_size=64, max_train_samples=max_train_samples)
    cfg.model = ModelConfig(blocks=blocks or [[1, 8, 3], [2, 12, 3]])
    cfg.trainer = TrainerConfig(**{"epochs": 2, "lr": 5e-3, "progress": False, **trainer_kw})
    return cfg


def ddp_step(rank: int, store: str, x, y, out: str) -> None:
    """One DDP step of a one-block model on rank ``rank``'s half of (x, y); saves the weights."""
    import torch
    import torch.distributed as dist

    from ctxconv.train.data_gen import DataGenConfig
    from ctxconv.train.distributed import DistContext, wrap
    from ctxconv.train.model import ModelConfig, build_model
    from ctxconv.train.objectives import BlockObjective

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    torch.manual_seed(0)
    block = build_model(ModelConfig(blocks=[[1, 8, 3]], norm="l2")).blocks[0]
    ddp = wrap(BlockObjective(block, "softmax", DataGenConfig(num_classes=10)),
               DistContext(rank, 2), torch.device("cpu"))
    opt = torch.optim.SGD(block.parameters(), lr=0.5)
    half = len(y) // 2
    loss, _ = ddp(x[rank * half:(rank + 1) * half], y[rank * half:(rank + 1) * half])
    loss.backward()
    opt.step()
    torch.save(block.state_dict(), f"{out}.{rank}")
    dist.destroy_process_group()


def stuck_rank(rank: int, port: int, out: str) -> None:
    """Rank 0 waits at a barrier that rank 1 never reaches; rank 0 writes the error it gets."""
    import os
    import time

    import torch

    from ctxconv.train.distributed import DistContext, DistributedTimeoutError, barrier, init

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = DistContext(rank, 2)
    init(ctx, torch.device("cpu"), 64, timeout_s=2)
    if rank == 0:
        t0 = time.monotonic()
        try:
            barrier(ctx)
            text = "no error"
        except DistributedTimeoutError as exc:
            text = f"{time.monotonic() - t0:.1f} {exc}"
        with open(out, "w") as f:
            f.write(text)
    else:
        time.sleep(8)
    os._exit(0)  # the group is broken: no orderly shutdown
