"""Measured peak memory of one training step, in this (fresh) process.

    python benchmarks/memory_probe.py VARIANT MODEL_JSON [--batch 128] [--threads 2]

VARIANT: ``block<i>`` (forward-only: block i trained, blocks < i frozen, run under no_grad)
or ``backprop`` (the whole network end to end). Prints one JSON line.

Method: import torch, set the thread count, warm the kernels up on a tiny conv (library
initialisation and thread pools belong to the baseline, not to training), then take the
baseline: the resident set size (RSS) now, with the kernel's high-water mark reset
(``/proc/self/clear_refs``). Then build the model (seeded), the batch (random images,
labels), the Adam optimizer, and run one step: forward, local (or end-to-end) loss,
backward, ``optimizer.step()``. The peak is the high-water mark ``VmHWM`` afterwards; the
result is peak minus baseline, so it holds the weights, the batch, gradients, Adam's
state, every activation and the allocator's scratch of that step. Linux only.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def _status_kib(field: str) -> int:
    m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    if m is None:
        raise RuntimeError(f"/proc/self/status has no {field} (peak RSS needs Linux)")
    return int(m.group(1))


def reset_peak() -> int:
    """Reset the kernel's RSS high-water mark; returns the RSS now (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")
    return 1024 * _status_kib("VmRSS")


def peak() -> int:
    return 1024 * _status_kib("VmHWM")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("variant")
    p.add_argument("model_json", help="ModelConfig fields as JSON")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    import torch
    import torch.nn.functional as F

    from ctxconv.train.data_gen import DataGenConfig
    from ctxconv.train.inference import summed_scores
    from ctxconv.train.model import ModelConfig, build_model
    from ctxconv.train.objectives import block_loss

    torch.set_num_threads(args.threads)
    warm = torch.nn.Conv2d(1, 4, 3, padding=1)
    opt = torch.optim.Adam(warm.parameters())
    for _ in range(2):
        warm(torch.randn(2, 1, 8, 8)).relu().square().mean().backward()
        opt.step()
    del warm, opt
    baseline = reset_peak()

    torch.manual_seed(args.seed)
    model = build_model(ModelConfig(**json.loads(args.model_json)))
    model.train()
    x = torch.randn(args.batch, model.cfg.in_channels, model.cfg.image_size, model.cfg.image_size)
    y = torch.randint(0, model.num_classes, (args.batch,))
    if args.variant == "backprop":
        opt = torch.optim.Adam(model.parameters())
        loss = F.cross_entropy(summed_scores(model, x), y)
    elif re.fullmatch(r"block\d+", args.variant) and int(args.variant[5:]) < len(model.blocks):
        b = int(args.variant[5:])
        opt = torch.optim.Adam(model.blocks[b].parameters())
        with torch.no_grad():
            h = model.features(x, b)  # frozen prefix: no graph
        loss, _ = block_loss(model.blocks[b], h, y, "softmax",
                             DataGenConfig(num_classes=model.num_classes))
    else:
        raise SystemExit(f"error: unknown variant {args.variant!r} (block0..block"
                         f"{len(model.blocks) - 1} or backprop)")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    top = peak()
    json.dump({"variant": args.variant, "batch": args.batch, "threads": args.threads,
               "baseline_rss_bytes": baseline, "peak_rss_bytes": top,
               "peak_above_baseline_bytes": top - baseline}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
