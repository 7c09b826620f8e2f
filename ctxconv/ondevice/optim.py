"""SGD (momentum, optionally Nesterov) and Adam on numpy float32 parameters.

Update rules follow torch.optim.SGD / torch.optim.Adam step for step (the host trainer
uses them), so a simulated step can be checked against torch's. State per parameter:
SGD with momentum keeps one buffer (1x the parameters), Adam two (2x).
"""

from __future__ import annotations

import numpy as np

F32 = np.float32
OPTIMIZERS = ("sgd", "adam")


class SGD:
    """torch.optim.SGD: d = g + wd*p; buf = m*buf + d (buf = d at the first step)."""

    state_copies = 1

    def __init__(self, lr: float, momentum: float = 0.9, nesterov: bool = True,
                 weight_decay: float = 0.0) -> None:
        self.lr, self.momentum, self.nesterov = lr, momentum, nesterov
        self.weight_decay = weight_decay
        self.buf: dict[str, np.ndarray] = {}

    @property
    def state_bytes_per_param(self) -> int:
        return 4 if self.momentum else 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             lr: float | None = None) -> None:
        lr = F32(self.lr if lr is None else lr)
        m = F32(self.momentum)
        for name, g in grads.items():
            p = params[name]
            d = g + F32(self.weight_decay) * p if self.weight_decay else g.astype(F32)
            if self.momentum:
                buf = self.buf.get(name)
                buf = d.copy() if buf is None else m * buf + d
                self.buf[name] = buf
                d = d + m * buf if self.nesterov else buf
            p -= lr * d


class Adam:
    """torch.optim.Adam (bias-corrected, eps outside the square root)."""

    state_copies = 2

    def __init__(self, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        self.lr, self.betas, self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}
        self.t: dict[str, int] = {}

    @property
    def state_bytes_per_param(self) -> int:
        return 8

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray],
             lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        b1, b2 = self.betas
        for name, g in grads.items():
            p = params[name]
            if self.weight_decay:
                g = g + F32(self.weight_decay) * p
            m = self.m.setdefault(name, np.zeros_like(p))
            v = self.v.setdefault(name, np.zeros_like(p))
            t = self.t[name] = self.t.get(name, 0) + 1
            m += (g - m) * F32(1 - b1)  # torch: exp_avg.lerp_(grad, 1 - beta1)
            v *= F32(b2)
            v += F32(1 - b2) * g * g
            step_size = F32(lr / (1 - b1**t))
            denom = np.sqrt(v) / F32(np.sqrt(1 - b2**t)) + F32(self.eps)
            p -= step_size * (m / denom)


def make_optimizer(name: str, lr: float, momentum: float = 0.9, weight_decay: float = 0.0
                   ) -> SGD | Adam:
    """The optimizer the host trainer would use for the same settings."""
    if name == "sgd":
        return SGD(lr, momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "adam":
        return Adam(lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
