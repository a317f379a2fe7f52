"""pareto.png: the measured table as points, the predicted front as a line, each device's chosen subnet marked
(predicted value, and the test top-1 with its 95% interval when measured)."""

from __future__ import annotations

from pathlib import Path

from ofa.io import atomic_write


def plot_pareto(path: Path, table: list[dict], front: list[dict], choices, metric: str, net) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter([r["macs"] / 1e6 for r in table], [r[metric] for r in table], s=10, alpha=0.5, color="tab:gray",
               label=f"measured subnets (validation {metric})")
    line = sorted((r["macs"], r["predicted"]) for r in front if r["cost_kind"] == "macs")
    if line:
        ax.plot([m / 1e6 for m, _ in line], [p for _, p in line], color="tab:blue", drawstyle="steps-post",
                label=f"predicted front ({metric})")
    for i, c in enumerate(choices):
        macs = net.costs(c.arch)[0] / 1e6
        color = f"C{(i + 1) % 10}"
        ax.scatter([macs], [c.predicted], marker="*", s=140, color=color, zorder=3,
                   label=f"{c.budget.name}: predicted")
        if c.measured is not None and metric == "top1":
            m = c.measured
            ax.errorbar([macs], [m.top1], yerr=[[m.top1 - m.ci_low], [m.ci_high - m.top1]], fmt="o",
                        color=color, capsize=3, zorder=3, label=f"{c.budget.name}: test top-1 (95% CI)")
        ax.annotate(c.budget.name, (macs, c.predicted), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("MACs (millions, log scale)")
    ax.set_ylabel("top-1 (%)" if metric == "top1" else "loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right" if metric == "top1" else "upper right")
    fig.tight_layout()
    atomic_write(Path(path), lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)
