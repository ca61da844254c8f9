"""models.optim.Adam computes what torch.optim.Adam(fused=True) computes, bit for bit, without importing
torch._dynamo."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.optim import Adam

REPO = Path(__file__).resolve().parents[2]


def twin_params(seed: int = 0) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    torch.manual_seed(seed)
    shapes = [(7, 5), (5,), (3, 4)]
    ours = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    return ours, [torch.nn.Parameter(p.detach().clone()) for p in ours]


def set_grads(params, step: int, skip_last: bool) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if (skip_last and i == len(params) - 1) else torch.randn(p.shape, generator=gen)


@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
def test_steps_match_torch_fused_adam_bitwise(weight_decay):
    ours, theirs = twin_params()
    mine, reference = Adam(ours, lr=1e-2, weight_decay=weight_decay), \
        torch.optim.Adam(theirs, lr=1e-2, weight_decay=weight_decay, fused=True)
    for step in range(12):
        lr = 1e-2 * 0.9 ** step  # a schedule, as MGCN's and SOIL's decay
        mine.lr = lr
        for group in reference.param_groups:
            group["lr"] = lr
        skip = step % 4 == 3  # a parameter without a gradient keeps its value and its moments
        set_grads(ours, step, skip)
        set_grads(theirs, step, skip)
        mine.step()
        reference.step()
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b), f"step {step}: parameters differ"
    assert not torch.equal(ours[0], twin_params()[0][0]), "the parameters never moved"


def test_state_dict_round_trip_continues_identically():
    ours, twins = twin_params()
    first = Adam(ours, lr=3e-3)
    for step in range(3):
        set_grads(ours, step, False)
        first.step()
    state = {k: [t.clone() for t in v] if isinstance(v, list) else v for k, v in first.state_dict().items()}
    copies = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    second = Adam(copies, lr=1.0)
    second.load_state_dict(state)
    assert second.lr == 3e-3
    for step in range(3, 6):
        set_grads(ours, step, False)
        set_grads(copies, step, False)
        first.step()
        second.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, copies))


def test_load_state_dict_refuses_other_shapes():
    ours, _ = twin_params()
    other = Adam([torch.nn.Parameter(torch.zeros(2, 2))], lr=1e-3)
    with pytest.raises(ValueError, match="exp_avgs|steps"):
        Adam(ours, lr=1e-3).load_state_dict(other.state_dict())


def test_zero_grad_clears_and_a_step_without_gradients_changes_nothing():
    ours, _ = twin_params()
    before = [p.detach().clone() for p in ours]
    opt = Adam(ours, lr=1e-2)
    set_grads(ours, 0, False)
    opt.zero_grad()
    assert all(p.grad is None for p in ours)
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(ours, before))
    assert all(float(s) == 0 for s in opt.steps)


def test_training_steps_do_not_import_the_compiler():
    """The reason this class exists: a step of torch.optim imports torch._dynamo (~1.6 s)."""
    code = ("import sys, torch\nfrom models.optim import Adam\nfrom models.trainer import seed_everything\n"
            "seed_everything(0)\np = torch.nn.Parameter(torch.ones(3))\nopt = Adam([p], lr=0.1)\n"
            "(p * p).sum().backward()\nopt.step()\nprint('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
