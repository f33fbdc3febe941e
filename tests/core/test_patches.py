"""hpu_shim.core.patches: the first original wins, restore is exact, rollback undoes only what came after."""

import pytest
import torch

from hpu_shim.core.patches import PatchRegistry, UndoLog


class Owner:
    def f(self):
        return "orig"


def test_first_original_wins():
    reg = PatchRegistry()
    original = Owner.__dict__["f"]
    reg.patch(Owner, "f", lambda self: "one")
    reg.patch(Owner, "f", lambda self: "two")
    assert reg.get_original(Owner, "f") is original
    reg.restore_all()
    assert Owner.__dict__["f"] is original and Owner().f() == "orig"


def test_inherited_attributes_are_deleted_not_shadowed():
    reg = PatchRegistry()
    reg.patch(torch.Tensor, "cuda", lambda self: None)
    assert reg.describe() == ["torch.Tensor.cuda (inherited)"]
    reg.restore_all()
    assert "cuda" not in torch.Tensor.__dict__


def test_rollback_undoes_only_what_came_after_the_checkpoint():
    class Mod:
        a, b = 1, 2

    reg = PatchRegistry()
    reg.patch(Mod, "a", 10)
    mark = reg.checkpoint()
    reg.patch(Mod, "a", 11)
    reg.patch(Mod, "b", 20)
    reg.patch(Mod, "c", 30)
    assert [x.rsplit(".", 1)[-1] for x in reg.rollback(mark)] == ["c", "b", "a"]
    assert (Mod.a, Mod.b, hasattr(Mod, "c")) == (10, 2, False)
    assert reg.is_patched(Mod, "a") and not reg.is_patched(Mod, "b")
    reg.restore_all()
    assert Mod.a == 1


def test_undo_log_replays_in_reverse():
    ns = {"x": 1}
    log = UndoLog()
    log.set_item(ns, "x", 2, "m.x")
    log.set_item(ns, "y", 3, "m.y")
    assert log.labels() == ["m.x", "m.y"] and log.replay() == 2 and ns == {"x": 1}


@pytest.mark.parametrize("n", [0, 1, 3])
def test_rollback_to_the_start_is_restore(n):
    class Mod:
        v = 0

    reg = PatchRegistry()
    mark = reg.checkpoint()
    for i in range(n):
        reg.patch(Mod, "v", i + 1)
    reg.rollback(mark)
    assert Mod.v == 0 and reg.describe() == []
