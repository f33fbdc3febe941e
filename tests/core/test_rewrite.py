"""hpu_shim.core.rewrite: device=/.to/.cuda/pin_memory= rewritten in scope, keeping evaluation order."""

import ast

import torch

from hpu_shim.core.rewrite import HELPER_NAME, rewrite


def test_int_device_only_for_torch_callees(shim, pkgs):
    (pkgs / "lmcache" / "ints.py").write_text(
        "import torch\n"
        "def worker(device=None):\n"
        "    return device\n"
        "class Spec:\n"
        "    def __init__(self, device):\n"
        "        self.device = device\n"
        "def go(t):\n"
        "    return (worker(device=0), Spec(device=1).device, str(torch.empty(1, device=0).device),\n"
        "            str(t.new_zeros(1, device=0).device), str(torch.device(0)), worker(device='cuda:1'))\n")
    shim.install(backend="cpu")
    import lmcache.ints

    assert lmcache.ints.go(torch.ones(1)) == (0, 1, "cpu", "cpu", "cpu", "cpu")


def test_device_keyword_keeps_evaluation_order(shim, pkgs):
    (pkgs / "lmcache" / "order.py").write_text(
        "import torch\n"
        "seen = []\n"
        "def note(x):\n"
        "    seen.append(x)\n"
        "    return x\n"
        "def go():\n"
        "    return note(torch.empty)(note(2), device=note('cuda'), **note({'dtype': torch.float16}))\n")
    shim.install(backend="cpu")
    import lmcache.order as order

    out = order.go()
    assert out.device.type == "cpu" and out.dtype == torch.float16
    assert order.seen[1:] == [2, "cuda", {"dtype": torch.float16}] and order.seen[0] is torch.empty


def test_rewrite_counts_and_helper_name():
    tree, n = rewrite(ast.parse("x.to('cuda'); f(device=d); y.cuda(); g(pin_memory=True); z.pin_memory()"))
    assert n == 5 and HELPER_NAME not in {a for a in dir(__builtins__)}
    code = ast.unparse(tree)
    assert code.count(HELPER_NAME) == 5 and "x.to" not in code
