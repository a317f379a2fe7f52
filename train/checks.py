"""Value checks for the training config: every key at every level is checked before any work is done or any
file is written, and a bad value names the key, what was given and what is allowed.

A ``Check`` is a predicate with the sentence that describes what it allows; ``check_section`` applies a table
of them to one mapping of the config (top level, ``data``, ``eval``, ...). The optimizer and scheduler settings are
timm's keyword arguments: ``check_optimizer`` and ``check_scheduler`` let timm itself check them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ofa.errors import OFAError


@dataclass(frozen=True)
class Check:
    test: Callable[[Any], bool]
    allowed: str


def integer(low: int, nullable: bool = False) -> Check:
    text = {0: "a non-negative integer", 1: "a positive integer"}.get(low, f"an integer >= {low}")
    text += " or null" if nullable else ""
    return Check(lambda v: (v is None and nullable) or (type(v) is int and v >= low), text)


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False) -> Check:
    def test(v: Any) -> bool:
        if type(v) not in (int, float):
            return False
        above = v > low if low_open else v >= low
        below = high is None or (v < high if high_open else v <= high)
        return above and below

    text = f"a number {'>' if low_open else '>='} {low}"
    if high is not None:
        text += f" and {'<' if high_open else '<='} {high}"
    return Check(test, text)


def choice(values: tuple | list) -> Check:
    return Check(lambda v: v in values, "one of " + ", ".join("null" if v is None else str(v) for v in values))


BOOLEAN = Check(lambda v: type(v) is bool, "true or false")
STRING = Check(lambda v: isinstance(v, str) and bool(v), "a non-empty string")
OPTIONAL_STRING = Check(lambda v: v is None or (isinstance(v, str) and bool(v)), "a non-empty string or null")
MAPPING = Check(lambda v: isinstance(v, dict), "a mapping")
PAIR = Check(lambda v: isinstance(v, (list, tuple)) and len(v) == 2 and all(type(x) in (int, float) for x in v),
             "a pair of numbers [low, high]")


def check_section(values: dict[str, Any], rules: dict[str, Check], where: str, extra: set[str] = frozenset()) -> None:
    """Every key of ``values`` is known (``rules`` or ``extra``, checked elsewhere) and passes its check."""
    if not isinstance(values, dict):
        raise OFAError(f"`{where}` must be a mapping; allowed keys: {sorted(set(rules) | set(extra))}")
    for key, value in values.items():
        if key not in rules and key not in extra:
            raise OFAError(f"unknown {where} entry {key!r}; allowed: {sorted(set(rules) | set(extra))}")
        if key in rules and not rules[key].test(value):
            raise OFAError(f"{where}: {key} must be {rules[key].allowed}; got {value!r}")


def keyword_names(*functions: Callable, exclude: set[str] = frozenset()) -> set[str]:
    """The keyword arguments a library function (or class) accepts, for checking the config keys passed to it."""
    names: set[str] = set()
    for fn in functions:
        for p in inspect.signature(fn).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
                names.add(p.name)
    return names - set(exclude)


SET_BY_PHASES = {"num_epochs", "warmup_epochs", "updates_per_epoch", "step_on_epochs"}  # scheduler args we own


def check_optimizer(args: dict[str, Any]) -> None:
    """timm builds the optimizer: a throwaway one on one parameter checks the name and every keyword now."""
    import timm.optim
    import torch

    opt = args.get("opt", "sgd")
    if not isinstance(opt, str) or opt.lower() not in timm.optim.list_optimizers():
        raise OFAError(f"optimizer: opt {opt!r} is not a timm optimizer; allowed: e.g. sgd, momentum, adamw, "
                       "lamb, lion (all: timm.optim.list_optimizers())")
    for key, check in (("weight_decay", number(0)), ("momentum", number(0, 1, high_open=True))):
        if key in args and not check.test(args[key]):
            raise OFAError(f"optimizer: {key} must be {check.allowed}; got {args[key]!r}")
    try:
        timm.optim.create_optimizer_v2(torch.nn.Linear(1, 1), lr=0.1, **args)
    except (TypeError, ValueError) as e:
        raise OFAError(f"optimizer: {e} (timm.optim.create_optimizer_v2 with opt={opt!r})") from None


def check_scheduler(args: dict[str, Any]) -> None:
    """The same for the scheduler, whose epochs and warmup each phase sets."""
    import timm.optim
    import timm.scheduler
    import torch

    owned = sorted(SET_BY_PHASES & set(args))
    if owned:
        raise OFAError(f"scheduler: {owned[0]} is set per phase (epochs, warmup_epochs), not here")
    for key in ("warmup_lr", "min_lr"):
        if key in args and not number(0).test(args[key]):
            raise OFAError(f"scheduler: {key} must be a number >= 0; got {args[key]!r}")
    optimizer = timm.optim.create_optimizer_v2(torch.nn.Linear(1, 1), opt="sgd", lr=0.1)
    try:
        timm.scheduler.create_scheduler_v2(optimizer, num_epochs=2, step_on_epochs=False, updates_per_epoch=1,
                                           **args)
    except (TypeError, ValueError) as e:
        raise OFAError(f"scheduler: {e} (allowed sched: cosine, tanh, step, multistep, plateau, poly, rsqrt, "
                       "constant)") from None
