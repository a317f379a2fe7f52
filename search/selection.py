"""RUN/search/selected.json across searches: a new search adds or updates its devices and keeps the others, so
a second `ofa search` for one more device does not silently drop what the first chose. A nested chain is one
decision over all its devices, so it is never merged: replacing or dropping devices there needs ``--replace``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ofa.errors import OFAError
from ofa.rundir import Selection

HINT = "delete it or search with --replace"


def read_selection(path: Path) -> Selection | None:
    return Selection.read(path, hint=HINT) if path.is_file() else None


def check_merge(path: Path, names: list[str], nested: bool, replace: bool) -> None:
    """Before any work: refuse a search that would drop devices a previous one chose, unless ``replace``."""
    old = read_selection(path) if not replace else None
    if old is None:
        return
    dropped = [name for name in old.ordered() if name not in names]
    if dropped and (nested or old.nested):
        raise OFAError(f"{path} holds the devices {dropped} from an earlier "
                       f"{'nested ' if old.nested else ''}search, and a nested chain cannot be merged "
                       f"with other devices: search them together, or pass --replace to drop them")


def merge(path: Path, selection: Selection, replace: bool) -> Selection:
    """``selection`` with the earlier selection's other devices kept (after them, in their order)."""
    return selection.merge(read_selection(path) if not replace else None)  # check_merge: nothing dropped here


def refuse_chance_level(measured: dict[str, Any], num_classes: int, force: bool) -> list[str]:
    """The devices whose test top-1 is indistinguishable from guessing (the 95% interval contains 1/classes):
    an error unless ``force`` (then a list to warn about). ``measured``: device -> ofa.Metrics or None."""
    chance = 100.0 / num_classes
    at_chance = [f"{name} ({m.interval_text()})" for name, m in measured.items()
                 if m is not None and m.at_chance(num_classes)]
    if at_chance and not force:
        raise OFAError(f"the subnets chosen for {', '.join(at_chance)} are at chance level on test "
                       f"({chance:.1f}% for {num_classes} classes): the supernet did not learn (see RUN/metrics.csv); "
                       "nothing was written (the measurements are kept: a rerun is quick); --force writes them anyway")
    return at_chance
