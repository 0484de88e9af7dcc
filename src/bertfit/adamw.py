"""The dense AdamW of bertfit's training loop: torch's fused AdamW kernel, driven without ``torch.optim.Optimizer``.

The update is torch's own (``torch.optim.adam.adam`` with ``fused=True`` and decoupled weight decay, one pass over
the weights where torch has the fused kernel: CPU and CUDA; its multi-tensor ``foreach`` path elsewhere), so the
weights are bit-identical to ``torch.optim.AdamW(fused=True)``'s (``tests/test_adamw.py``). What this class leaves
out is the ``Optimizer`` base class: its ``__init__``, ``state_dict`` and ``load_state_dict`` are wrapped to keep
TorchDynamo out, and that wrapper imports ``torch._dynamo`` on first use, 1.4 s of a 47 s ``bertfit train`` of 2,000
sentences on a 2-core CPU (more than the whole validation stage), paid by every run that never compiles anything.

The learning rate is set per step by the loop (``group["lr"]``, as a scheduler would); gradient clipping can hand
its factor to the kernel through :attr:`AdamW.grad_scale` (the kernel divides the gradients by it as it reads them,
torch's hook for AMP's unscaling), and :class:`torch.amp.GradScaler` drives it like any optimizer (it unscales the
gradients itself, then calls :meth:`AdamW.step` unless a step overflowed).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.optim.adam import adam

__all__ = ["AdamW"]


class AdamW:
    """AdamW over parameter groups, with torch's fused kernel where it exists.

    Args:
        groups: Parameter groups: dicts with ``"params"`` and optionally ``"weight_decay"`` (default
            ``weight_decay``).
        lr: The learning rate every group starts with; the loop changes ``group["lr"]`` per step.
        betas: The moments' decays.
        eps: Added to the second moment's square root.
        weight_decay: Decoupled weight decay for groups that do not set their own.
        fused: Use the fused kernel (CPU and CUDA tensors); False uses torch's ``foreach`` implementation.

    >>> optimizer = AdamW([{"params": weights, "weight_decay": 0.01}], lr=1e-4, fused=True)  # doctest: +SKIP
    >>> loss.backward(); optimizer.step(); optimizer.zero_grad()  # doctest: +SKIP
    """

    def __init__(
        self,
        groups: Iterable[dict[str, Any]],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        fused: bool = True,
    ) -> None:
        self.betas, self.eps, self.fused = betas, eps, fused
        self.param_groups = [
            {
                **group,
                "params": list(group["params"]),
                "lr": lr,
                "weight_decay": group.get("weight_decay", weight_decay),
            }
            for group in groups
        ]
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {}
        # Divides the gradients inside the next step (clipping's factor), then resets; None: no division.
        self.grad_scale: torch.Tensor | None = None

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step for every parameter with a gradient."""
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            states = [self._state(p) for p in params]
            adam(
                params,
                [p.grad for p in params],
                [s["exp_avg"] for s in states],
                [s["exp_avg_sq"] for s in states],
                [],
                [s["step"] for s in states],
                foreach=None if self.fused else True,
                fused=self.fused,
                grad_scale=self.grad_scale,  # the fused kernel's; torch's foreach path refuses one
                found_inf=None,
                amsgrad=False,
                beta1=self.betas[0],
                beta2=self.betas[1],
                lr=group["lr"],
                weight_decay=group["weight_decay"],
                eps=self.eps,
                maximize=False,
                decoupled_weight_decay=True,
            )
        self.grad_scale = None

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (torch's ``set_to_none=True``: the next backward allocates it afresh)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def state_dict(self) -> dict[str, Any]:
        """The moments and step counts, by parameter position (for a checkpoint), and each group's settings."""
        params = [p for group in self.param_groups for p in group["params"]]
        return {
            "state": {i: dict(self.state[p]) for i, p in enumerate(params) if p in self.state},
            "param_groups": [{k: v for k, v in group.items() if k != "params"} for group in self.param_groups],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` of an optimizer over the same parameters (or ``torch.optim.AdamW``'s)."""
        params = [p for group in self.param_groups for p in group["params"]]
        if len(state["param_groups"]) != len(self.param_groups):
            raise ValueError("the saved optimizer state has another number of parameter groups")
        for group, saved in zip(self.param_groups, state["param_groups"]):
            group.update({k: v for k, v in saved.items() if k != "params"})  # torch's format lists their positions
        self.state = {
            params[i]: {k: v.to(params[i].device, copy=True) for k, v in moments.items()}
            for i, moments in state["state"].items()
        }

    def _state(self, param: torch.Tensor) -> dict[str, torch.Tensor]:
        # Created at the first step, as torch's AdamW does: zero moments, a float32 step count on the weight's device
        # for the fused kernel (torch keeps it on the CPU for the foreach path).
        if param not in self.state:
            device = param.device if self.fused else torch.device("cpu")
            self.state[param] = {
                "step": torch.zeros((), dtype=torch.float32, device=device),
                "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
            }
        return self.state[param]
