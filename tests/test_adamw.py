"""bertfit's AdamW is torch's fused AdamW, step for step, without ``torch.optim``'s base class."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bertfit.adamw import AdamW

LEARNING_RATES = [0.0, 5e-3, 1e-2, 7e-3, 3e-3, 1e-3]  # warm-up from 0, then a decay, as the loop sets them


def _weights(seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [
        torch.randn(12, 7, generator=generator).requires_grad_(),
        torch.randn(7, generator=generator).requires_grad_(),
    ]


def _gradients(steps: int, seed: int = 1) -> list[list[torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [[torch.randn(12, 7, generator=generator), torch.randn(7, generator=generator)] for _ in range(steps)]


def _groups(weights):
    return [{"params": [weights[0]], "weight_decay": 0.01}, {"params": [weights[1]], "weight_decay": 0.0}]


def _run(optimizer, weights, gradients, learning_rates, grad_scale=None):
    for grads, lr in zip(gradients, learning_rates):
        for weight, grad in zip(weights, grads):
            weight.grad = grad.clone()
        for group in optimizer.param_groups:
            group["lr"] = lr
        if grad_scale is not None:
            optimizer.grad_scale = torch.tensor(grad_scale)
        optimizer.step()
        optimizer.zero_grad()


# grad_scale is the fused kernel's (the loop clips with clip_grad_norm_ where it is not fused)
@pytest.mark.parametrize(("fused", "grad_scale"), [(True, None), (True, 4.0), (False, None)])
def test_steps_are_bit_identical_to_torch_adamw(fused, grad_scale):
    ours, theirs = _weights(), _weights()
    gradients = _gradients(len(LEARNING_RATES))
    mine = AdamW(_groups(ours), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, fused=fused)
    reference = torch.optim.AdamW(_groups(theirs), lr=1e-2, fused=fused or None, foreach=None if fused else True)
    _run(mine, ours, gradients, LEARNING_RATES, grad_scale)
    _run(reference, theirs, gradients, LEARNING_RATES, grad_scale)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
        assert torch.equal(mine.state[a]["exp_avg_sq"], reference.state[b]["exp_avg_sq"])
    assert not torch.equal(ours[0], _weights()[0])


def test_grad_scale_divides_one_step_only():
    weights = _weights()
    optimizer = AdamW(_groups(weights), lr=1e-2)
    optimizer.grad_scale = torch.tensor(2.0)
    _run(optimizer, weights, _gradients(1), [1e-2])
    assert optimizer.grad_scale is None


def test_a_run_continued_from_the_state_dict_is_the_same_run():
    straight, resumed = _weights(), _weights()
    gradients = _gradients(len(LEARNING_RATES))
    _run(AdamW(_groups(straight), lr=1e-2), straight, gradients, LEARNING_RATES)

    first = AdamW(_groups(resumed), lr=1e-2)
    _run(first, resumed, gradients[:3], LEARNING_RATES[:3])
    saved = first.state_dict()
    second = AdamW(_groups(resumed), lr=1e-2)
    second.load_state_dict(saved)
    _run(second, resumed, gradients[3:], LEARNING_RATES[3:])
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)


def test_loads_the_state_of_torch_adamw():
    # A checkpoint written before bertfit had its own AdamW holds torch.optim.AdamW's state dict.
    ours, theirs = _weights(), _weights()
    gradients = _gradients(len(LEARNING_RATES))
    reference = torch.optim.AdamW(_groups(theirs), lr=1e-2, fused=True)
    _run(reference, theirs, gradients[:3], LEARNING_RATES[:3])
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            a.copy_(b)
    mine = AdamW(_groups(ours), lr=1e-2)
    mine.load_state_dict(reference.state_dict())
    assert [len(group["params"]) for group in mine.param_groups] == [1, 1]
    _run(reference, theirs, gradients[3:], LEARNING_RATES[3:])
    _run(mine, ours, gradients[3:], LEARNING_RATES[3:])
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_a_state_for_other_groups_is_refused():
    weights = _weights()
    with pytest.raises(ValueError, match="parameter groups"):
        AdamW([{"params": weights}], lr=1e-2).load_state_dict(AdamW(_groups(weights), lr=1e-2).state_dict())


def test_a_step_skips_weights_without_a_gradient():
    weights = _weights()
    before = weights[1].detach().clone()
    optimizer = AdamW(_groups(weights), lr=1e-2)
    weights[0].grad = torch.ones_like(weights[0])
    optimizer.step()
    assert torch.equal(weights[1], before) and weights[1] not in optimizer.state


def test_stepping_never_imports_torchdynamo():
    # The reason for the class: torch.optim.Optimizer imports torch._dynamo on first use (1.4 s of a short run).
    code = (
        "import sys, torch\n"
        "from bertfit.adamw import AdamW\n"
        "w = torch.ones(3, requires_grad=True)\n"
        "o = AdamW([{'params': [w]}], lr=0.1)\n"
        "w.sum().backward(); o.step(); o.load_state_dict(o.state_dict())\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_a_loss_scaler_drives_it_and_skips_a_step_that_overflowed():
    # fp16 training on older GPUs: GradScaler unscales the gradients, then steps unless one is inf or NaN.
    weights = _weights()
    optimizer = AdamW(_groups(weights), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    before = [w.detach().clone() for w in weights]
    scaler.scale(sum(w.sum() for w in weights) * float("inf")).backward()
    scaler.step(optimizer)
    scaler.update()
    assert all(torch.equal(w, b) for w, b in zip(weights, before)) and scaler.get_scale() == 512.0
    optimizer.zero_grad()
    scaler.scale(sum(w.sum() for w in weights)).backward()
    scaler.step(optimizer)  # unscaled to gradients of 1: Adam's first step moves every weight by lr
    torch.testing.assert_close(weights[1], before[1] - 1e-2)
