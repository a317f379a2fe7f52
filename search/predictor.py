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
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import safetensors.torch
import torch
from torch import nn

from ofa import OFAError, SearchSpace
from ofa.io import atomic_write

from .genes import GeneSpace

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
class FitSettings:
    """How a predictor is fitted; each family uses what applies to it (the MLPs the first four, ridge the last)."""

    seed: int = 0
    epochs: int = 300
    lr: float = 1e-3
    patience: int = 30
    ridge_alpha: float = 1.0


@dataclass
class Predictor(ABC):
    """A fitted predictor of ``metric`` for archs of ``genes.space``. Call :meth:`predict` on a list of archs.

    One subclass per family (``PREDICTORS``); they share the target normalisation and the file format, and each
    says how it fits normalised targets, predicts them and stores its tensors.
    """

    family: ClassVar[str]
    metric: str
    genes: GeneSpace
    hidden: int = 400
    layers: int = 3
    members: int = 1
    mean: float = 0.0
    std: float = 1.0
    held_out: dict = field(default_factory=dict)

    # -- what a family defines ---------------------------------------------------------------------------------
    @abstractmethod
    def fit_normalised(self, x: torch.Tensor, y: torch.Tensor, settings: FitSettings) -> None:
        """Fit encoded archs ``x`` to targets ``y`` already normalised by ``mean`` and ``std``."""

    @abstractmethod
    def predict_normalised(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised predictions for encoded archs ``x``."""

    @abstractmethod
    def tensors(self) -> dict[str, torch.Tensor]:
        """The weights, as saved in the .safetensors file."""

    @abstractmethod
    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take the weights back from what :meth:`tensors` saved."""

    # -- prediction --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict_encoded(self, x: np.ndarray) -> np.ndarray:
        out = self.predict_normalised(torch.from_numpy(np.asarray(x, dtype=np.float32)))
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
        tensors = {k: v.contiguous() for k, v in self.tensors().items()}
        meta = {"format": "ofa-search-predictor/1", "family": self.family, "metric": self.metric,
                "hidden": self.hidden, "layers": self.layers, "members": self.members, "mean": self.mean,
                "std": self.std, "space": self.genes.space.to_dict(), "held_out": self.held_out}
        atomic_write(path, lambda tmp: safetensors.torch.save_file(tensors, tmp))
        atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=2)))
        return path

    @staticmethod
    def load(path: str | Path) -> Predictor:
        """The predictor saved at ``path``, as an instance of its family's class."""
        path = Path(path).with_suffix(".safetensors")
        meta_path = path.with_suffix(".json")
        if not path.is_file() or not meta_path.is_file():
            raise OFAError(f"no predictor at {path} (+ .json); fit one with `ofa search RUN`")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != "ofa-search-predictor/1":
            raise OFAError(f"{meta_path} is not an ofa search predictor")
        if meta["family"] not in PREDICTORS:
            raise OFAError(f"{meta_path}: unknown predictor {meta['family']!r}; allowed: {list(PREDICTORS)}")
        p = PREDICTORS[meta["family"]](
            metric=meta["metric"], genes=GeneSpace(SearchSpace.from_dict(meta["space"])), hidden=meta["hidden"],
            layers=meta["layers"], members=meta["members"], mean=meta["mean"], std=meta["std"],
            held_out=meta.get("held_out", {}))
        p.load_tensors(safetensors.torch.load_file(str(path)))
        return p


@dataclass
class MLPPredictor(Predictor):
    """The once-for-all predictor: ``members`` MLPs (``layers`` x ``hidden`` ReLU), their outputs averaged."""

    family: ClassVar[str] = "mlp"
    models: list[nn.Module] = field(default_factory=list)

    def fit_normalised(self, x: torch.Tensor, y: torch.Tensor, settings: FitSettings) -> None:
        for i in range(self.members):
            torch.manual_seed(settings.seed + i)
            model = _mlp(self.genes.width, self.hidden, self.layers)
            _train_mlp(model, x, y, settings.seed + i, settings.epochs, settings.lr, settings.patience)
            self.models.append(model)

    def predict_normalised(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x).squeeze(1) for m in self.models]).mean(0)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"m{i}.{k}": v for i, m in enumerate(self.models) for k, v in m.state_dict().items()}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        for i in range(self.members):
            m = _mlp(self.genes.width, self.hidden, self.layers)
            m.load_state_dict({k[len(f"m{i}."):]: v for k, v in tensors.items() if k.startswith(f"m{i}.")})
            self.models.append(m.eval())


@dataclass
class EnsemblePredictor(MLPPredictor):
    """Five MLPs with seeds ``seed`` .. ``seed + 4``, averaged: less variance on small tables."""

    family: ClassVar[str] = "ensemble"
    members: int = 5


@dataclass
class RidgePredictor(Predictor):
    """A linear model on the same encoding, in closed form: the baseline that says whether the MLP earns its keep."""

    family: ClassVar[str] = "ridge"
    weights: torch.Tensor | None = None  # (width + 1,): the weights, then the bias

    def fit_normalised(self, x: torch.Tensor, y: torch.Tensor, settings: FitSettings) -> None:
        a = torch.cat([x, torch.ones(len(x), 1)], 1).double()
        reg = settings.ridge_alpha * torch.eye(a.shape[1], dtype=torch.float64)
        reg[-1, -1] = 0.0  # the bias is not penalised
        self.weights = torch.linalg.solve(a.T @ a + reg, a.T @ y.double()).float()

    def predict_normalised(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weights[:-1] + self.weights[-1]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"ridge": self.weights}

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.weights = tensors["ridge"]


PREDICTORS: dict[str, type[Predictor]] = {cls.family: cls for cls in (MLPPredictor, EnsemblePredictor,
                                                                       RidgePredictor)}


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
    settings = FitSettings(seed=seed, epochs=epochs, lr=lr, patience=patience, ridge_alpha=ridge_alpha)

    def fit(x: np.ndarray, y: np.ndarray) -> Predictor:
        mean, std = float(y.mean()), float(y.std()) or 1.0
        p = PREDICTORS[family](metric=metric, genes=genes, hidden=hidden, layers=layers, mean=mean, std=std)
        p.fit_normalised(torch.from_numpy(x), torch.from_numpy(((y - mean) / std).astype(np.float32)), settings)
        return p

    probe = fit(x[train], y[train])
    held = scores(probe.predict_encoded(x[test]), y[test])
    final = fit(x, y) if refit_all else probe
    final.held_out = held
    return final
