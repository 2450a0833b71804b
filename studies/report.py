"""`python -m studies report`: a study's results as Markdown and PNGs (studies/<name>.md).

Why matplotlib and not Optuna's plotly figures: plotly's PNG export needs a browser engine
that is not available here, and a report must render from a plain checkout. Every section
degrades to a sentence when the study cannot support it yet (no complete trial, one trial,
parameters that never varied), so the report can be written at any time, mid-study too.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from studies.spec import STUDIES_DIR, StudySpec
from studies.storage import normalize_url, open_storage, redact
from studies.tracking import RUN_ID_ATTR

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
MAX_ROWS = 10


def load_study(spec: StudySpec, storage_url: str | None) -> optuna.Study:
    """The study, read-only (no heartbeat thread, nothing created)."""
    storage = open_storage(storage_url, spec.storage, heartbeat=False)
    return optuna.load_study(study_name=spec.name, storage=storage)


def generator_of(spec: StudySpec, t: FrozenTrial) -> str:
    return t.params.get("generator", spec.generators[0])


def blocks_of(spec: StudySpec, t: FrozenTrial) -> tuple[str, Any] | None:
    """The trial's block-count-like parameter (n_blocks, or phi for compound scaling)."""
    for key, value in t.params.items():
        if key.endswith((".n_blocks", ".phi")) or key in ("n_blocks", "phi"):
            return key.rsplit(".", 1)[-1], value
    return None


def best_trials(spec: StudySpec, study: optuna.Study) -> list[FrozenTrial]:
    """The Pareto front (several objectives) or the best few (one), best first."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    front = study.best_trials if spec.multi_objective else complete
    sign = 1 if spec.directions[0] == "minimize" else -1
    return sorted(front, key=lambda t: sign * t.values[0])[:MAX_ROWS]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(spec: StudySpec, trials: list[FrozenTrial]) -> list[str]:
    metrics = spec.metrics
    head = ["trial", "generator", "blocks", *metrics, "other params", "MLflow run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        blocks = blocks_of(spec, t)
        shown = {"generator"} | {k for k in t.params if blocks and k.endswith(blocks[0])}
        other = ", ".join(f"{k}={_fmt(v)}" for k, v in t.params.items() if k not in shown)
        values = [_fmt(v) for v in (t.values or [math.nan] * len(metrics))]
        run = t.user_attrs.get(RUN_ID_ATTR, "")
        row = [
            str(t.number),
            generator_of(spec, t),
            f"{blocks[0]}={blocks[1]}" if blocks else "",
            *values,
            other,
            f"`{run[:12]}`" if run else "",
        ]
        lines.append("| " + " | ".join(row) + " |")
    return lines


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_pareto(spec: StudySpec, study: optuna.Study, path: Path) -> bool:
    """First objective against the second, the Pareto front joined, colour = generator."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not spec.multi_objective or not complete:
        return False
    plt = _plt()
    front = {t.number for t in study.best_trials}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for g in sorted({generator_of(spec, t) for t in complete}):
        ts = [t for t in complete if generator_of(spec, t) == g]
        ax.scatter([t.values[1] for t in ts], [t.values[0] for t in ts], label=g, alpha=0.8)
        for t in ts:
            b = blocks_of(spec, t)
            if b:
                ax.annotate(str(b[1]), (t.values[1], t.values[0]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")  # fmt: skip
    pts = sorted((t.values[1], t.values[0]) for t in complete if t.number in front)
    ax.plot([p[0] for p in pts], [p[1] for p in pts], "k--", lw=1, label="Pareto front")
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=140, facecolors="none", edgecolors="k")
    ax.set_xlabel(f"{spec.metrics[1]} ({spec.directions[1]})")
    ax.set_ylabel(f"{spec.metrics[0]} ({spec.directions[0]})")
    ax.set_title(f"{spec.name}: Pareto front (numbers: block count)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_blocks(spec: StudySpec, study: optuna.Study, path: Path) -> bool:
    """Each objective against the block count, one colour per generator."""
    complete = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if blocks_of(spec, t)
    ]
    if not complete:
        return False
    plt = _plt()
    n = len(spec.metrics)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.8), squeeze=False)
    for i, (ax, metric) in enumerate(zip(axes[0], spec.metrics, strict=True)):
        for g in sorted({generator_of(spec, t) for t in complete}):
            ts = sorted(
                (t for t in complete if generator_of(spec, t) == g),
                key=lambda t: blocks_of(spec, t)[1],
            )
            ax.plot([blocks_of(spec, t)[1] for t in ts], [t.values[i] for t in ts], "o-",
                    label=g, alpha=0.8)  # fmt: skip
        ax.set_xlabel("blocks (n_blocks / phi)")
        ax.set_ylabel(metric)
        ax.legend(fontsize=8)
    fig.suptitle(f"{spec.name}: objectives vs block count")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def importances(spec: StudySpec, study: optuna.Study) -> dict[str, dict[str, float]] | str:
    """Parameter importances per objective (fANOVA), or why they cannot be computed yet."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2:
        return f"needs at least 2 complete trials (has {len(complete)})"
    varying = {
        k
        for k in {k for t in complete for k in t.params}
        if len({str(t.params.get(k)) for t in complete}) > 1
    }
    if not varying:
        return "no parameter varied across the complete trials"
    out: dict[str, dict[str, float]] = {}
    for i, metric in enumerate(spec.metrics):
        try:
            result = optuna.importance.get_param_importances(
                study,
                target=(lambda t, i=i: t.values[i]),
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0),
            )
        except (RuntimeError, ValueError) as e:
            return f"could not be computed: {e}"
        out[metric] = {k: float(v) for k, v in result.items()}
    if not any(out.values()):
        return "no parameter is shared by every complete trial (conditional parameters only)"
    return out


def plot_importances(imp: dict[str, dict[str, float]], name: str, path: Path) -> None:
    plt = _plt()
    n = len(imp)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 3.4), squeeze=False)
    for ax, (metric, values) in zip(axes[0], imp.items(), strict=True):
        keys = sorted(values, key=values.get)
        ax.barh(keys, [values[k] for k in keys])
        ax.set_title(metric, fontsize=10)
        ax.set_xlabel("importance (fANOVA)")
    fig.suptitle(f"{name}: parameter importances")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(spec: StudySpec, storage_url: str | None, out_dir: Path | None = None) -> Path:
    """Write `<out_dir>/<name>.md` and its plots under `<out_dir>/<name>_plots/`."""
    out_dir = Path(out_dir or STUDIES_DIR)
    study = load_study(spec, storage_url)
    plots = out_dir / f"{spec.name}_plots"
    plots.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    objectives = ", ".join(f"{o.direction} `{o.metric}`" for o in spec.objectives)
    lines = [
        f"# Study `{spec.name}`",
        "",
        spec.description,
        "",
        f"- Objectives: {objectives}; sampler `{spec.sampler}`, pruner `{spec.pruner}`.",
        f"- Searched: generators {', '.join(f'`{g}`' for g in spec.generators)}; "
        + ", ".join(f"`{p.path}`" for p in spec.params),
        f"- Trials: {len(trials)} ("
        + ", ".join(f"{n} {s.lower()}" for s, n in states.items() if n)
        + f"); budget {spec.n_trials}.",
        f"- Storage: `{redact(normalize_url(storage_url))}`; MLflow experiment "
        f"`{spec.experiment}` (filter `tags.effgan.study = '{spec.name}'`).",
        "",
        "## Best trials" + (" (the Pareto front)" if spec.multi_objective else ""),
        "",
    ]
    best = best_trials(spec, study)
    lines += _table(spec, best) if best else ["No complete trial yet."]
    lines += ["", "## Pareto front: quality vs epoch time", ""]
    if plot_pareto(spec, study, plots / "pareto.png"):
        lines.append(f"![Pareto front]({plots.name}/pareto.png)")
    else:
        lines.append("Needs two objectives and at least one complete trial.")
    lines += ["", "## Objectives vs block count", ""]
    if plot_blocks(spec, study, plots / "blocks.png"):
        lines.append(f"![objectives vs blocks]({plots.name}/blocks.png)")
    else:
        lines.append("No complete trial with a block-count parameter yet.")
    lines += ["", "## Parameter importances", ""]
    imp = importances(spec, study)
    if isinstance(imp, str):
        lines.append(f"Not shown: {imp}.")
    else:
        plot_importances(imp, spec.name, plots / "importance.png")
        lines.append(f"![parameter importances]({plots.name}/importance.png)")
        lines.append("")
        lines.append(
            "fANOVA over the parameters every complete trial has (a generator's own options "
            "are conditional, so only the generator choice and the shared ones enter)."
        )
    path = out_dir / f"{spec.name}.md"
    path.write_text("\n".join(lines).rstrip() + "\n")
    return path


def show(spec: StudySpec, storage_url: str | None) -> None:
    """Print every trial, one line each."""
    from studies.run import describe_trial

    study = load_study(spec, storage_url)
    for t in study.get_trials(deepcopy=False):
        print(describe_trial(t))
