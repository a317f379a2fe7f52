"""What the predicted search chose, as Optuna studies beside the measured table (one storage to open).

The search scores thousands of candidates per budget on arrays, not as trials; what a user wants to inspect
afterwards is recorded as finished trials instead: per device, the best candidates (the ones re-ranked on
validation) with the chosen one marked, and per cost kind, the Pareto front of everything the search scored.
Each study is replaced when the search runs again, so it always shows the latest search.
"""

from __future__ import annotations

from collections.abc import Sequence

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import create_trial

from ofa import Arch

from .genes import GeneSpace


def _params(genes: GeneSpace, arch: Arch) -> tuple[dict, dict]:
    values = genes.genes_from_arch(arch)
    return values, {g.name: CategoricalDistribution(g.choices) for g in genes.genes}


def _replace_study(storage, name: str, directions: list[str]) -> optuna.Study:
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    return optuna.create_study(study_name=name, storage=storage, directions=directions)


def record_device(storage, device: str, genes: GeneSpace, candidates: Sequence[dict], direction: str) -> str:
    """Study ``search:DEVICE``: one trial per candidate dict (``arch``, ``predicted``, ``violations`` and any
    further user attributes, e.g. ``chosen``, ``val_top1``, ``macs``). Returns the study name."""
    name = f"search:{device}"
    study = _replace_study(storage, name, [direction])
    trials = []
    for c in candidates:
        params, distributions = _params(genes, c["arch"])
        attrs = {k: v for k, v in c.items() if k not in ("arch", "predicted", "violations")}
        trials.append(create_trial(value=c["predicted"], params=params, distributions=distributions,
                                   user_attrs={"arch": c["arch"].to_json(), "key": c["arch"].key(), **attrs},
                                   constraints={f"limit{i}": v for i, v in enumerate(c["violations"])}))
    study.add_trials(trials)
    return name


def record_front(storage, cost_kind: str, genes: GeneSpace, front: Sequence[dict], direction: str) -> str:
    """Study ``search-front:COST_KIND``: the Pareto front (predicted metric vs cost), one trial per point."""
    name = f"search-front:{cost_kind}"
    study = _replace_study(storage, name, [direction, "minimize"])
    trials = []
    for point in front:
        params, distributions = _params(genes, point["arch"])
        trials.append(create_trial(values=[point["predicted"], point["cost"]], params=params,
                                   distributions=distributions,
                                   user_attrs={"arch": point["arch"].to_json(), "key": point["arch"].key(),
                                               "macs": point["macs"], "params": point["params"]}))
    study.add_trials(trials)
    return name
