"""Accuracy predictors: encoded arch -> predicted validation top-1 (or loss), fitted on the measured table.

Families (``PREDICTORS``): ``mlp`` (the once-for-all predictor: 3 x 400 ReLU, Adam, normalised targets, early
stopping on a split of the training rows), ``ensemble`` (five such MLPs with different seeds, averaged: less
variance on small tables) and ``ridge`` (a linear model on the same encoding, closed form: the baseline that says
whether the MLP earns its keep). Every fit is scored on held-out measured subnets (RMSE, Spearman, Kendall tau).
Saved as safetensors (weights) + JSON (family, metric, gene layout, normalisation, scores); nothing is pickled.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from torch import nn

from ofa import OFAError, SearchSpace
from ofa.io import atomic_write

from .genes import GeneSpace

PREDICTORS = ("mlp", "ensemble", "ridge")
METRICS = ("top1", "loss")


# -- rank statistics (numpy only: scipy is not a dependency) ------------------------------------------------------
def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # average ranks over ties
        tie = x == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (ties handled), O(n^2) memory-light over rows."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    concordant = discordant = ties_a = ties_b = 0.0
    for i in range(len(a) - 1):
        da, db = np.sign(a[i + 1:] - a[i]), np.sign(b[i + 1:] - b[i])
        prod = da * db
        concordant += (prod > 0).sum()
        discordant += (prod < 0).sum()
        ties_a += ((da == 0) & (db != 0)).sum()
        ties_b += ((db == 0) & (da != 0)).sum()
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    return float((concordant - discordant) / denom) if denom > 0 else 0.0


def scores(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    predicted, measured = np.asarray(predicted, float), np.asarray(measured, float)
    return {"rmse": float(np.sqrt(np.mean((predicted - measured) ** 2))),
            "spearman": spearman(predicted, measured), "kendall_tau": kendall_tau(predicted, measured),
            "n": int(len(measured))}


# -- models --------------------------------------------------------------------------------------------------------
def _mlp(width: int, hidden: int, layers: int) -> nn.Sequential:
    mods: list[nn.Module] = []
    for i in range(layers):
        mods += [nn.Linear(width if i == 0 else hidden, hidden), nn.ReLU()]
    mods.append(nn.Linear(hidden if layers else width, 1))
    return nn.Sequential(*mods)


def _train_mlp(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int, lr: float,
               patience: int, batch_size: int = 64) -> None:
    """Adam on MSE, keeping the weights of the best epoch on a 15% early-stopping split."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_stop = max(1, int(round(0.15 * len(x)))) if len(x) >= 8 else 0
    stop_idx, fit_idx = perm[:n_stop], perm[n_stop:]
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    best, best_state, bad = float("inf"), None, 0
    for _ in range(epochs):
        model.train()
        order = fit_idx[torch.randperm(len(fit_idx), generator=g)]
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.mse_loss(model(x[idx]).squeeze(1), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        if n_stop == 0:
            continue
        model.eval()
        with torch.no_grad():
            stop_loss = nn.functional.mse_loss(model(x[stop_idx]).squeeze(1), y[stop_idx]).item()
        if stop_loss < best - 1e-6:
            best, bad = stop_loss, 0
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()


@dataclass
class Predictor:
    """A fitted predictor of ``metric`` for archs of ``genes.space``. Call :meth:`predict` on a list of archs."""

    family: str
    metric: str
    genes: GeneSpace
    hidden: int = 400
    layers: int = 3
    members: int = 1
    mean: float = 0.0
    std: float = 1.0
    models: list[nn.Module] = field(default_factory=list)  # mlp / ensemble members
    ridge: torch.Tensor | None = None  # (width + 1,) weights then bias, for the ridge family
    held_out: dict = field(default_factory=dict)

    # -- prediction --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_encoded(self, x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.asarray(x, dtype=np.float32))
        if self.family == "ridge":
            out = t @ self.ridge[:-1] + self.ridge[-1]
        else:
            out = torch.stack([m(t).squeeze(1) for m in self.models]).mean(0)
        return (out * self.std + self.mean).numpy().astype(np.float64)

    def predict(self, archs) -> np.ndarray:
        return self.predict_encoded(self.genes.encode(list(archs)))

    def better(self, value: float) -> float:
        """A score where higher is better (top-1 as is, loss negated): what the search maximises."""
        return value if self.metric == "top1" else -value

    # -- files -------------------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.safetensors) and its ``.json`` beside it, atomically."""
        path = Path(path).with_suffix(".safetensors")
        if self.family == "ridge":
            tensors = {"ridge": self.ridge.contiguous()}
        else:
            tensors = {f"m{i}.{k}": v.contiguous() for i, m in enumerate(self.models)
                       for k, v in m.state_dict().items()}
        meta = {"format": "ofa-search-predictor/1", "family": self.family, "metric": self.metric,
                "hidden": self.hidden, "layers": self.layers, "members": self.members, "mean": self.mean,
                "std": self.std, "space": self.genes.space.to_dict(), "held_out": self.held_out}
        atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp))
        atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Predictor:
        path = Path(path).with_suffix(".safetensors")
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise OFAError(f"no predictor at {path} (+ .json); fit one with `ofa search RUN`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != "ofa-search-predictor/1":
            raise OFAError(f"{meta_path} is not an ofa search predictor")
        tensors = safetensors.torch.load_file(str(path))
        p = cls(family=meta["family"], metric=meta["metric"],
                genes=GeneSpace(SearchSpace.from_dict(meta["space"])), hidden=meta["hidden"],
                layers=meta["layers"], members=meta["members"], mean=meta["mean"], std=meta["std"],
                held_out=meta.get("held_out", {}))
        if p.family == "ridge":
            p.ridge = tensors["ridge"]
        else:
            for i in range(p.members):
                m = _mlp(p.genes.width, p.hidden, p.layers)
                m.load_state_dict({k[len(f"m{i}."):]: v for k, v in tensors.items() if k.startswith(f"m{i}.")})
                p.models.append(m.eval())
        return p


def fit_predictor(genes: GeneSpace, archs, targets, family: str = "mlp", metric: str = "top1",
                  held_out: float = 0.2, seed: int = 0, epochs: int = 300, lr: float = 1e-3,
                  patience: int = 30, hidden: int = 400, layers: int = 3, ridge_alpha: float = 1.0,
                  refit_all: bool = True) -> Predictor:
    """Fit a predictor of ``targets`` (one per arch), scoring it on a held-out ``held_out`` fraction.

    The held-out scores are stored in ``predictor.held_out``. With ``refit_all`` the returned model is then
    refitted on every row (the scores describe the procedure; the search gets all the data).
    """
    if family not in PREDICTORS:
        raise OFAError(f"unknown predictor {family!r}; allowed: {list(PREDICTORS)}")
    if metric not in METRICS:
        raise OFAError(f"unknown predictor target {metric!r}; allowed: {list(METRICS)}")
    archs, y = list(archs), np.asarray(targets, dtype=np.float64)
    if len(archs) < 8:
        raise OFAError(f"the accuracy table has {len(archs)} measured subnets; a predictor needs at least 8 "
                       "(measure more with --table-size)")
    x = genes.encode(archs)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(archs))
    n_test = max(3, int(round(held_out * len(archs))))
    test, train = perm[:n_test], perm[n_test:]
    kw = dict(family=family, metric=metric, seed=seed, epochs=epochs, lr=lr, patience=patience, hidden=hidden,
              layers=layers, ridge_alpha=ridge_alpha)
    probe = _fit(genes, x[train], y[train], **kw)
    held = scores(probe.predict_encoded(x[test]), y[test])
    final = _fit(genes, x, y, **kw) if refit_all else probe
    final.held_out = held
    return final


def _fit(genes: GeneSpace, x: np.ndarray, y: np.ndarray, family: str, metric: str, seed: int, epochs: int,
         lr: float, patience: int, hidden: int, layers: int, ridge_alpha: float) -> Predictor:
    mean, std = float(y.mean()), float(y.std()) or 1.0
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(((y - mean) / std).astype(np.float32))
    p = Predictor(family=family, metric=metric, genes=genes, hidden=hidden, layers=layers, mean=mean, std=std)
    if family == "ridge":
        a = torch.cat([xt, torch.ones(len(xt), 1)], 1).double()
        reg = ridge_alpha * torch.eye(a.shape[1], dtype=torch.float64)
        reg[-1, -1] = 0.0  # the bias is not penalised
        p.ridge = torch.linalg.solve(a.T @ a + reg, a.T @ yt.double()).float()
        return p
    p.members = 5 if family == "ensemble" else 1
    for i in range(p.members):
        torch.manual_seed(seed + i)
        model = _mlp(genes.width, hidden, layers)
        _train_mlp(model, xt, yt, seed + i, epochs, lr, patience)
        p.models.append(model)
    return p
