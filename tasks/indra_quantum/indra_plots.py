"""indra-quantum's plots (PNG, published as Prefect artifacts): training curves and the ablation chart."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return ([p[0] for p in pts], [p[1] for p in pts]) if pts else ([], [])


def plot_training(steps: list[dict], evals: list[dict], out_dir: Path, title: str) -> list[Path]:
    """``loss.png`` (total + held-out), ``ce_vs_kd.png`` and, for complex modes, ``phase_magnitude.png``."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    written = []

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*_series(steps, "loss"), label="total loss (train)", color="tab:blue", lw=1)
    if evals:
        ax.plot(*_series(evals, "val_loss"), "o-", label="held-out CE", color="tab:red")
    ax.set(xlabel="step", ylabel="loss", title=f"{title}: total loss")
    ax.grid(alpha=0.3)
    ax.legend()
    written.append(_save(fig, out_dir / "loss.png", plt))

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(*_series(steps, "ce"), label="cross-entropy", color="tab:blue", lw=1)
    ax.set(xlabel="step", ylabel="cross-entropy", title=f"{title}: CE vs KD")
    kd_steps, kd = _series(steps, "kd")
    if any(kd):
        twin = ax.twinx()
        twin.plot(kd_steps, kd, label="KD (T²·KL, gated)", color="tab:orange", lw=1)
        twin.set_ylabel("KD")
        twin.legend(loc="upper center")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    written.append(_save(fig, out_dir / "ce_vs_kd.png", plt))

    if any(r.get("magnitude_mean") is not None for r in steps):
        fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), dpi=100, sharex=True)
        top.plot(*_series(steps, "magnitude_mean"), label="mean |Z|", color="tab:green", lw=1)
        if any(r.get("alpha") is not None for r in steps):
            top.plot(*_series(steps, "alpha"), label="α (hybrid head)", color="tab:gray", lw=1)
        top.set(ylabel="magnitude", title=f"{title}: phase and magnitude of the complex state")
        top.legend()
        top.grid(alpha=0.3)
        bottom.plot(*_series(steps, "phase_abs_mean"), label="mean |phase| (rad)", color="tab:purple", lw=1)
        aux_steps, aux = _series(steps, "aux_phase")
        if any(aux):
            bottom.plot(aux_steps, aux, label="phase alignment loss", color="tab:orange", lw=1)
        bottom.set(xlabel="step", ylabel="phase")
        bottom.legend()
        bottom.grid(alpha=0.3)
        written.append(_save(fig, out_dir / "phase_magnitude.png", plt))
    return written


def plot_ablation(rows: list[dict], png: Path, teacher_perplexity: float | None) -> Path:
    """Held-out perplexity per mode, with and without distillation (lower is better)."""
    plt = _pyplot()
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    width = 0.38
    for j, (distill, color) in enumerate(((False, "tab:blue"), (True, "tab:orange"))):
        vals = [next((r["val_perplexity"] for r in rows if r["mode"] == m and r["distill"] == distill), 0) for m in modes]
        bars = ax.bar([i + (j - 0.5) * width for i in range(len(modes))], vals, width,
                      label="with KD" if distill else "CE only", color=color)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    if teacher_perplexity:
        ax.axhline(teacher_perplexity, color="tab:gray", ls="--", label=f"teacher {teacher_perplexity:.1f}")
    ax.set_xticks(range(len(modes)), modes)
    ax.set(ylabel="held-out perplexity (lower is better)", title="indra-quantum ablation")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, Path(png), plt)


def _save(fig, path: Path, plt) -> Path:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
