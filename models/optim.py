"""Adam (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015), one fused kernel per step.

The same arithmetic as `torch.optim.Adam(fused=True)` (L2 weight decay added to the gradient, bias
corrections from a float32 step counter), bit for bit: both call torch's `_fused_adam_` kernel;
`tests/unit/test_optim.py` checks the equality step by step. Why not torch.optim itself: every
`torch.optim` optimizer's `step` imports `torch._dynamo` (the compiler, ~1.6 s per process on these
machines) to mark graph breaks that only matter under `torch.compile`, which the trainer never uses;
that import was a third of the time from a command's start to its first epoch.
"""
from __future__ import annotations

import torch

BETAS = (0.9, 0.999)
EPS = 1e-8


class Adam:
    """Adam over a fixed list of parameters; `lr` may be changed between steps (a schedule)."""

    def __init__(self, params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0):
        if not params:
            raise ValueError("Adam needs at least one parameter")
        self.params, self.lr, self.weight_decay = list(params), float(lr), float(weight_decay)
        # float32 step counters, as torch's fused Adam keeps them (its bias corrections read them)
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in self.params]
        self.exp_avgs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]
        self.exp_avg_sqs = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (the others, and their moments, stay)."""
        live = [i for i, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        steps = [self.steps[i] for i in live]
        torch._foreach_add_(steps, 1)
        torch._fused_adam_([self.params[i] for i in live], [self.params[i].grad for i in live],
                           [self.exp_avgs[i] for i in live], [self.exp_avg_sqs[i] for i in live], [], steps,
                           amsgrad=False, lr=self.lr, beta1=BETAS[0], beta2=BETAS[1],
                           weight_decay=self.weight_decay, eps=EPS, maximize=False, grad_scale=None, found_inf=None)

    def state_dict(self) -> dict:
        return {"lr": self.lr, "weight_decay": self.weight_decay, "steps": self.steps,
                "exp_avgs": self.exp_avgs, "exp_avg_sqs": self.exp_avg_sqs}

    def load_state_dict(self, state: dict) -> None:
        """Restores a state_dict of an Adam over parameters of the same shapes, in the same order."""
        for key in ("steps", "exp_avgs", "exp_avg_sqs"):
            saved, own = state[key], getattr(self, key)
            if len(saved) != len(own) or any(s.shape != o.shape for s, o in zip(saved, own)):
                raise ValueError(f"optimizer state {key!r} does not match the parameters: "
                                 f"{[tuple(s.shape) for s in saved]} vs {[tuple(o.shape) for o in own]}")
        self.lr, self.weight_decay = float(state["lr"]), float(state["weight_decay"])
        with torch.no_grad():
            for key in ("steps", "exp_avgs", "exp_avg_sqs"):
                for own, saved in zip(getattr(self, key), state[key]):
                    own.copy_(saved)
