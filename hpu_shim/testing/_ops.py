"""Which aten ops have an HPU kernel, and what the bridge does with the others (CPU fallback).

The allow-list is ``data/hpu_ops_v1.19.0.txt``, generated from the Gaudi PyTorch bridge v1.19.0
(``scripts/hpu_op.yaml`` plus its hand-registered kernels; see ``data/README.md``).  For an op that
reaches the device (docs/gaudi-semantics.md "CPU fallback"):

* listed, and its ``fallback_check`` (if any) passes: an HPU kernel runs;
* not listed but torch has a ``CompositeExplicitAutograd`` kernel for it: that kernel runs on the
  device and its parts are judged one by one (the bridge registers nothing, so the dispatcher uses
  the composite kernel, as for every backend);
* otherwise the bridge's boxed fallback copies the inputs to the host, runs the CPU kernel and copies
  the results back: a *CPU fallback*.  ``PT_HPU_PLACE_ON_CPU`` decides whether that is allowed
  (``_profile``); when it is not, the call raises the bridge's "is not yet supported on HPU".

``FALLBACK_CHECKS`` models the per-call checks whose rule is plain in the bridge source; the other
checks named in the list (dtype or feature rules of rarer ops) are taken as passing.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

DATA_FILE = os.path.join(os.path.dirname(__file__), "data", "hpu_ops_v1.19.0.txt")
BRIDGE_RELEASE = "v1.19.0"


@dataclass(frozen=True)
class OpRow:
    """One line of the allow-list."""

    name: str                   # "aten::index_select", "aten::add.Tensor"
    modes: frozenset            # {"lazy", "eager"}
    scalar_ids: tuple[int, ...]  # Scalar arguments the bridge turns into graph inputs
    fallback_check: str | None


@functools.lru_cache(maxsize=1)
def allow_list() -> dict[str, OpRow]:
    rows: dict[str, OpRow] = {}
    with open(DATA_FILE, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip() or line.startswith("#"):
                continue
            name, *flags = line.rstrip("\n").split("\t")
            fields = dict(flag.split("=", 1) for flag in flags)
            rows[name] = OpRow(
                name=name, modes=frozenset(fields.get("modes", "lazy,eager").split(",")),
                scalar_ids=tuple(int(i) for i in fields["scalar_ids"].split(",")) if "scalar_ids" in fields else (),
                fallback_check=fields.get("fallback_check"))
    return rows


def op_name(schema) -> str:
    """The bridge's spelling of an overload: ``aten::name`` or ``aten::name.overload``.

    Takes a ``FunctionSchema`` or anything with ``name`` and ``label`` ("aten.add.Tensor").
    """
    overload = getattr(schema, "overload_name", None)
    if overload is None:  # an _OpInfo: the overload is the label's last part
        overload = schema.label.rsplit(".", 1)[-1]
        overload = "" if overload == "default" else overload
    return f"{schema.name}.{overload}" if overload else schema.name


#: Dispatch keys whose kernel serves every backend: an op with one of them needs no HPU kernel.
COMPOSITE_KEYS = ("CompositeImplicitAutograd", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional")


def is_composite(schema) -> bool:
    """torch runs these on any device through other ops (the bridge registers nothing for them)."""
    import torch

    name = op_name(schema)
    try:
        return any(torch._C._dispatch_has_kernel_for_dispatch_key(name, key) for key in COMPOSITE_KEYS)
    except RuntimeError:  # not a dispatcher operator (Python-only metadata ops): nothing to fall back
        return True


def falls_back(row: OpRow | None, composite: bool, args: tuple, kwargs: dict, lazy: bool) -> bool:
    """Does this call run on the CPU through the bridge's fallback?"""
    if row is None:
        return not composite
    return not passes_check(row, args, kwargs, lazy)


def row_for(schema, lazy: bool) -> OpRow | None:
    """The allow-list row of this overload in this mode, or None (no HPU kernel)."""
    row = allow_list().get(op_name(schema))
    if row is None or ("lazy" if lazy else "eager") not in row.modes:
        return None
    return row


# -- per-call checks (the bridge's FALLBACK_CHECK functions) --------------------------------------
def _index_select_check(args: tuple, kwargs: dict, lazy: bool) -> bool:
    """hpu_ops/lazy/index_select_gen.cpp: ``self`` of rank > 5 goes to the CPU."""
    return args[0].dim() <= 5


def _index_check(args: tuple, kwargs: dict, lazy: bool) -> bool:
    """hpu_ops/eager/index_gen.cpp: eager sends ``x[idx]`` with any index on the host to the CPU;
    hpu_ops/lazy/index_gen.cpp: lazy always runs it on the HPU."""
    if lazy:
        return True
    indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
    return not any(i is not None and i.device.type == "cpu" for i in indices)


#: check name (from the allow-list) -> predicate(args, kwargs, lazy): True = runs on the HPU.
FALLBACK_CHECKS: dict[str, Callable[[tuple, dict, bool], bool]] = {
    "IndexSelectFallbackCheck": _index_select_check,
    "IndexFallbackCheck": _index_check,
}


def passes_check(row: OpRow, args: tuple, kwargs: dict, lazy: bool) -> bool:
    check = FALLBACK_CHECKS.get(row.fallback_check or "")
    return True if check is None else check(args, kwargs, lazy)


def not_supported_message(name: str) -> str:
    """The bridge's error (habana_kernels/fallback_helper.h) plus what to do about it."""
    return (f"{name} is not yet supported on HPU. [emulated HPU: no kernel in bridge {BRIDGE_RELEASE}'s op list "
            "and PT_HPU_PLACE_ON_CPU does not allow it to fall back to the CPU; add it to PT_HPU_PLACE_ON_CPU "
            "or use an op with an HPU kernel (docs/gaudi-semantics.md, CPU fallback)]")


def scalar_input_positions(row: OpRow | None) -> tuple[int, ...]:
    return row.scalar_ids if row is not None else ()
