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


def _replace_study(storage, name: str, directions: list[str], metric_names: list[str]) -> optuna.Study:
    try:
        optuna.delete_study(study_name=name, storage=storage)
    except KeyError:
        pass
    study = optuna.create_study(study_name=name, storage=storage, directions=directions)
    study.set_metric_names(metric_names)  # what the dashboard labels the values with
    return study


def record_device(storage, device: str, genes: GeneSpace, candidates: Sequence[dict], direction: str,
                  metric: str = "top1") -> str:
    """Study ``search:DEVICE``: one trial per candidate dict (``arch``, ``predicted``, ``violations`` and any
    further user attributes, e.g. ``chosen``, ``val_top1``, ``macs``). Returns the study name."""
    name = f"search:{device}"
    study = _replace_study(storage, name, [direction], [f"predicted_{metric}"])
    trials = []
    for c in candidates:
        params, distributions = _params(genes, c["arch"])
        attrs = {k: v for k, v in c.items() if k not in ("arch", "predicted", "violations")}
        trials.append(create_trial(value=c["predicted"], params=params, distributions=distributions,
                                   user_attrs={"arch": c["arch"].to_json(), "key": c["arch"].key(), **attrs},
                                   constraints={f"limit{i}": v for i, v in enumerate(c["violations"])}))
    study.add_trials(trials)
    return name


def record_front(storage, cost_kind: str, genes: GeneSpace, front: Sequence[dict], direction: str,
                 metric: str = "top1") -> str:
    """Study ``search-front:COST_KIND``: the Pareto front (predicted metric vs cost), one trial per point."""
    name = f"search-front:{cost_kind}"
    study = _replace_study(storage, name, [direction, "minimize"], [f"predicted_{metric}", cost_kind])
    trials = []
    for point in front:
        params, distributions = _params(genes, point["arch"])
        trials.append(create_trial(values=[point["predicted"], point["cost"]], params=params,
                                   distributions=distributions,
                                   user_attrs={"arch": point["arch"].to_json(), "key": point["arch"].key(),
                                               "macs": point["macs"], "params": point["params"]}))
    study.add_trials(trials)
    return name


def record_search(store, genes: GeneSpace, costs, choices: Sequence, front: Sequence[dict], predictor,
                  metric: str) -> None:
    """The re-ranked candidates of every device and the Pareto fronts, as Optuna studies in the table's storage
    (open them with optuna-dashboard next to the measurements)."""
    direction = "maximize" if metric == "top1" else "minimize"
    for c in choices:
        rows = []
        for e, val in c.candidates:
            rows.append(_candidate(metric, costs, c.budget, e.arch, predictor.better(e.score), val,
                                   chosen=e.arch == c.arch))
        if not any(r["chosen"] for r in rows):  # --nested replaced the choice: record it too
            rows.append(_candidate(metric, costs, c.budget, c.arch, c.predicted, None, chosen=True))
        if c.measured is not None:
            next(r for r in rows if r["chosen"])["test_top1"] = c.measured.top1
        record_device(store, c.budget.name, genes, rows, direction, metric)
    for kind in sorted({r["cost_kind"] for r in front}):
        record_front(store, kind, genes, [r for r in front if r["cost_kind"] == kind], direction, metric)


def _candidate(metric: str, costs, budget, arch: Arch, predicted: float, val, chosen: bool) -> dict:
    macs, params = costs.net.costs(arch)
    row = {"arch": arch, "predicted": predicted, "violations": costs.violations(arch, budget), "chosen": chosen,
           "macs": macs, "params": params}
    if val is not None:
        row[f"val_{metric}"] = getattr(val, metric)
    return row
