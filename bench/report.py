"""REPORT.md: one spec's benchmark runs, read back from the MLflow store, as tables and plots.

Why a separate reader: the report must be regenerable from the store alone (no training
code, no worker state), so anyone can rebuild it after a rerun or on another machine.
It is deterministic for a given store: runs and labels are sorted, no clock is read (the
only times shown are the runs' own), seaborn's style is fixed, no statistic is
bootstrapped, and PNGs are written without date or software metadata. A regenerated
report therefore diffs cleanly against the committed one.

Entry points: `write_report` (called by `python -m bench run` and `python -m bench report`)
and `main` (`python -m bench.report --spec quick`).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tabulate import tabulate

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.entities import Run

EXPERIMENT_PREFIX = "effgan-bench/"
BASELINE_LABEL = "resnet"
FINISHED, FAILED = "FINISHED", "FAILED"
NA = "—"

# Per-epoch metrics whose whole history is read: the loss tables and curves use every
# epoch, and the speed figures are averaged over epochs rather than taken from the last.
LOSS_KEYS = (
    "cycle_loss_total",
    "gen_ab_loss_total",
    "gen_ba_loss_total",
    "disc_a_loss",
    "disc_b_loss",
)
SPEED_KEYS = (
    "epoch_time",
    "step_time_median",
    "step_time_p90",
    "images_per_s",
    "cpu_time",
    "load_avg_1m",
    "achieved_flops_per_s",
)
HISTORY_KEYS = LOSS_KEYS + SPEED_KEYS
LOSS_TITLES = {
    "cycle_loss_total": "total cycle loss",
    "gen_ab_loss_total": "A→B total generator loss",
    "gen_ba_loss_total": "B→A total generator loss",
    "disc_a_loss": "discriminator A loss",
    "disc_b_loss": "discriminator B loss",
}

# Reported in the thesis (thesis_facts.md): 40 epochs, batch 1, 256x256, one GTX 1080 Ti.
THESIS_SETUP = "reported in the thesis on a GTX 1080 Ti at 256 px, 40 epochs, batch 1"


@dataclass(frozen=True)
class ThesisFigure:
    """One row of the thesis's Table 4.7, tied to our runs by the `effgan.thesis_method` tag."""

    method: str
    name: str
    epoch_s: float
    total_s: int
    params: int


THESIS_FIGURES = (
    ThesisFigure("baseline", "ResNet (baseline)", 67.5, 45 * 60 + 4, 2_855_362),
    ThesisFigure(
        "I", "Complete EfficientNet-B3 (Method I)", 130.5, 3600 + 43 * 60 + 27, 21_287_998
    ),
    ThesisFigure("II", "EfficientNet split V1 (Method II)", 54.0, 36 * 60 + 4, 622_305),
    ThesisFigure("III", "EfficientNet split V2 (Method III)", 55.5, 37 * 60 + 8, 622_305),
)

# Perf runs (issue 7): known metrics first, in this order; any others follow alphabetically.
PERF_METRICS = (
    "step_time_median",
    "step_time_p90",
    "images_per_s",
    "achieved_flops_per_s",
    "peak_flops_per_s",
    "utilisation",
    "harness_overhead_ratio",
    "pipeline_images_per_s",
    "epoch_time_mean",
)

# Image files this module writes; stale ones (e.g. a plot no longer produced) are removed.
OWNED_IMAGE_GLOBS = ("losses-*.png", "epoch-time.png", "frontier-*.png", "samples.png")


class ReportError(RuntimeError):
    """The store cannot produce a report (missing store or experiment, no runs)."""


# ----------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run flattened to what the report needs."""

    run_id: str
    run_name: str
    experiment_id: str
    key: str
    label: str
    generator: str
    family: str
    thesis_method: str
    seed: int | None
    status: str
    failure: str
    start_time: int | None
    end_time: int | None
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]  # the latest value of each metric (last step)
    history: dict[str, dict[int, float]] = field(default_factory=dict)  # key -> epoch -> value

    @property
    def finished(self) -> bool:
        return self.status == FINISHED

    def sort_key(self) -> tuple[Any, ...]:
        return (_label_key(self.label), self.seed is None, self.seed or 0, self.run_id)


@dataclass(frozen=True)
class BenchData:
    """A spec's runs, one per key (reruns superseded), plus any perf runs in the store."""

    spec: str
    experiment_id: str
    runs: list[RunRecord]
    superseded: int
    perf_runs: list[RunRecord]

    @property
    def finished(self) -> list[RunRecord]:
        return [r for r in self.runs if r.finished]


def _label_key(label: str) -> tuple[bool, str]:
    """The baseline first, then alphabetical: a stable order a reader can scan."""
    return (label != BASELINE_LABEL, label)


def _check_store(tracking_uri: str) -> None:
    """Fail clearly on a missing SQLite file instead of letting MLflow create an empty store."""
    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])
        if not path.exists():
            raise ReportError(
                f"no MLflow store at {path}: run `python -m bench run` first or pass --tracking-uri"
            )


def _search_runs(
    client: MlflowClient, experiment_ids: list[str], filter_string: str = ""
) -> list[Run]:
    runs: list[Run] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids, filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value not in (None, "", "None") else None
    except ValueError:
        return None


def _record(client: MlflowClient, run: Run, history_keys: Iterable[str]) -> RunRecord:
    tags = dict(run.data.tags)
    params = dict(run.data.params)
    metrics = {k: float(v) for k, v in run.data.metrics.items()}
    history: dict[str, dict[int, float]] = {}
    for key in history_keys:
        if key not in metrics:
            continue
        # Several values at one step (a retried log) resolve to the last one logged.
        points = sorted(
            client.get_metric_history(run.info.run_id, key), key=lambda m: (m.step, m.timestamp)
        )
        history[key] = {int(m.step): float(m.value) for m in points}
    generator = tags.get("effgan.generator") or params.get("generator", "?")
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name or "",
        experiment_id=run.info.experiment_id,
        key=tags.get("effgan.key", run.info.run_id),
        label=tags.get("effgan.label") or generator,
        generator=generator,
        family=tags.get("effgan.family", ""),
        thesis_method=tags.get("effgan.thesis_method", "none"),
        seed=_int_or_none(tags.get("effgan.seed", params.get("seed"))),
        status=tags.get("effgan.status") or run.info.status,
        failure=tags.get("effgan.failure", ""),
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        tags=tags,
        params=params,
        metrics=metrics,
        history=history,
    )


def _latest_per(
    records: Iterable[RunRecord], group: Callable[[RunRecord], Any]
) -> tuple[list[RunRecord], int]:
    """One run per group: a finished one if any, else the latest. Returns (kept, superseded)."""
    groups: dict[Any, list[RunRecord]] = {}
    for rec in records:
        groups.setdefault(group(rec), []).append(rec)
    kept = [
        max(recs, key=lambda r: (r.finished, r.start_time or 0, r.run_id))
        for recs in groups.values()
    ]
    return kept, sum(len(v) for v in groups.values()) - len(kept)


def load_bench(tracking_uri: str, spec_name: str) -> BenchData:
    """Read the spec's experiment (and any `effgan.perf` runs) from the store."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    _check_store(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    by_name = {e.name: e for e in experiments}
    experiment = by_name.get(EXPERIMENT_PREFIX + spec_name)
    if experiment is None:
        known = sorted(
            n.removeprefix(EXPERIMENT_PREFIX) for n in by_name if n.startswith(EXPERIMENT_PREFIX)
        )
        raise ReportError(
            f"no runs of spec {spec_name!r} in the store (experiment "
            f"{EXPERIMENT_PREFIX}{spec_name}); specs with runs: {', '.join(known) or 'none'}"
        )
    records = [
        _record(client, r, HISTORY_KEYS) for r in _search_runs(client, [experiment.experiment_id])
    ]
    if not records:
        raise ReportError(f"experiment {experiment.name} has no runs")
    runs, superseded = _latest_per(records, lambda r: r.key)

    others = sorted(
        e.experiment_id for e in experiments if not e.name.startswith(EXPERIMENT_PREFIX)
    )
    perf: list[RunRecord] = []
    if others:
        found = _search_runs(client, others, "tags.`effgan.perf` LIKE '%'")
        perf_records = [_record(client, r, ()) for r in found]
        perf, _ = _latest_per(
            (r for r in perf_records if r.finished),
            lambda r: (r.tags["effgan.perf"], r.experiment_id, r.run_name),
        )
    perf.sort(key=lambda r: (r.tags["effgan.perf"], r.run_name, r.run_id))
    return BenchData(
        spec_name, experiment.experiment_id, sorted(runs, key=RunRecord.sort_key), superseded, perf
    )


# ----------------------------------------------------------------------------- aggregation


def _epoch_mean(rec: RunRecord, key: str, final_key: str | None = None) -> float:
    """A per-epoch metric averaged over the run's epochs (or its logged summary, if any)."""
    if final_key and final_key in rec.metrics:
        return rec.metrics[final_key]
    values = list(rec.history.get(key, {}).values())
    if values:
        return float(np.mean(values))
    return rec.metrics.get(key, math.nan)


def identity_key(key: str) -> str:
    """The do-nothing baseline's name for a quality metric (gt_mae_in -> identity_mae_in)."""
    return "identity_" + key.removeprefix("gt_")


def run_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    """One row per finished run: the figures the tables and plots aggregate."""
    rows = []
    for rec in runs:
        total = rec.metrics.get("total_train_time")
        if total is None and "epoch_time" in rec.history:
            total = float(sum(rec.history["epoch_time"].values()))
        row: dict[str, Any] = {
            "label": rec.label,
            "generator": rec.generator,
            "thesis_method": rec.thesis_method,
            "seed": rec.seed,
            "run_id": rec.run_id,
            "epoch_time": _epoch_mean(rec, "epoch_time", "epoch_time_mean"),
            "total_time": math.nan if total is None else total,
            "params_gen": rec.metrics.get("params_trainable_gen", math.nan),
            "flops_gen": rec.metrics.get("flops_gen_forward", math.nan),
            "flops_per_s": _epoch_mean(rec, "achieved_flops_per_s"),
            "peak_mem": rec.metrics.get("peak_memory_bytes", math.nan),
            "compile_time": rec.metrics.get("compile_time", math.nan),
        }
        for key in SPEED_KEYS[1:-1]:
            row[key] = _epoch_mean(rec, key)
        for col in QUALITY_COLUMNS:
            row[col.key] = rec.metrics.get(col.key, math.nan)
            row[identity_key(col.key)] = rec.metrics.get(identity_key(col.key), math.nan)
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Stat:
    """Mean, sd and count of one figure across a variant's seeds."""

    mean: float
    sd: float
    n: int

    @property
    def ok(self) -> bool:
        return self.n > 0 and math.isfinite(self.mean)


def stat(values: Iterable[float]) -> Stat:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if arr.size == 0:
        return Stat(math.nan, math.nan, 0)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return Stat(float(arr.mean()), sd, int(arr.size))


def variant_stats(frame: pd.DataFrame, keys: Iterable[str]) -> dict[str, dict[str, Stat]]:
    """label -> key -> Stat over that label's runs (one per seed)."""
    out: dict[str, dict[str, Stat]] = {}
    for label in sorted(frame["label"].unique(), key=_label_key):
        sub = frame[frame["label"] == label]
        out[label] = {k: stat(sub[k].tolist()) for k in keys}
    return out


def pareto_mask(cost: Sequence[float], loss: Sequence[float]) -> list[bool]:
    """True where no other point is at least as cheap and as good, and strictly better in one."""
    points = list(zip(cost, loss, strict=True))
    return [
        not any(
            c2 <= c and l2 <= lo and (c2 < c or l2 < lo)
            for j, (c2, l2) in enumerate(points)
            if j != i
        )
        for i, (c, lo) in enumerate(points)
    ]


def selected_epochs(n_epochs: int) -> list[int]:
    """Epochs for the loss tables: all for short runs, else first/quarter/half/3 quarters/last.

    For 40 epochs this gives the thesis's 1, 10, 20, 30, 40.
    """
    if n_epochs <= 5:
        return list(range(1, n_epochs + 1))
    return sorted({1, n_epochs // 4, n_epochs // 2, (3 * n_epochs) // 4, n_epochs})


# ----------------------------------------------------------------------------- formatting


def _decimals(x: float, sig: int) -> int:
    if x == 0 or not math.isfinite(x):
        return 0
    return max(0, sig - 1 - math.floor(math.log10(abs(x))))


def fmt_num(x: float, sig: int = 3, decimals: int | None = None) -> str:
    """`sig` significant digits, thousands separators, never scientific notation."""
    if x is None or not math.isfinite(x):
        return NA
    d = _decimals(x, sig) if decimals is None else decimals
    return f"{x:,.{d}f}"


def fmt_int(x: float) -> str:
    return NA if not math.isfinite(x) else f"{round(x):,}"


def _scaled(x: float, unit: str) -> tuple[float, str]:
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return x / factor, prefix + unit
    return x, unit


def fmt_duration(seconds: float) -> str:
    """45 min 4 s, 1 h 43 min 27 s: the thesis's style for total times."""
    if not math.isfinite(seconds):
        return NA
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    parts = [f"{h} h"] if h else []
    if h or m:
        parts.append(f"{m} min")
    parts.append(f"{sec} s")
    return " ".join(parts)


def fmt_ratio(r: float) -> str:
    if not math.isfinite(r):
        return NA
    if r == 0:
        return "×0.00"
    return f"×{r:.2f}" if abs(r) >= 0.1 else f"×{fmt_num(r, 2)}"


@dataclass(frozen=True)
class Column:
    """A main-table column: where its value comes from and how to print it."""

    title: str
    key: str
    kind: str  # seconds | duration | int | flops | flops_s | mib | plain | percent
    sig: int = 3

    def unit_value(self, x: float) -> tuple[float, str]:
        """The value in display units and its unit suffix."""
        if self.kind == "seconds":
            return x, " s"
        if self.kind == "flops":
            v, u = _scaled(x, "FLOP")
            return v, f" {u}"
        if self.kind == "flops_s":
            v, u = _scaled(x, "FLOP/s")
            return v, f" {u}"
        if self.kind == "mib":
            return x / 2**20, " MiB"
        if self.kind == "percent":
            return 100 * x, " %"
        return x, ""

    def cell(self, s: Stat, baseline: Stat | None = None) -> str:
        """ "mean ± sd unit (×ratio)"; ± only when seeds disagree, the ratio when a baseline exists."""
        if not s.ok:
            return NA
        if self.kind == "int":
            text = fmt_int(s.mean)
            if s.n > 1 and s.sd > 0:
                text += f" ± {fmt_int(s.sd)}"
        elif self.kind == "duration":
            text = f"{fmt_num(s.mean, self.sig)} s"
            if s.n > 1 and s.sd > 0:
                text = f"{fmt_num(s.mean, self.sig)} ± {fmt_num(s.sd, decimals=_decimals(s.mean, self.sig))} s"
            if s.mean >= 60:
                text += f" ({fmt_duration(s.mean)})"
        else:
            value, unit = self.unit_value(s.mean)
            d = _decimals(value, self.sig)
            text = fmt_num(value, decimals=d)
            if s.n > 1 and s.sd > 0:
                scale = value / s.mean if s.mean else 1.0  # the sd in the mean's units
                text += f" ± {fmt_num(s.sd * scale, decimals=d)}"
            text += unit
        if baseline is not None and baseline.ok and baseline.mean != 0:
            text += f" ({fmt_ratio(s.mean / baseline.mean)})"
        return text


COST_COLUMNS = (
    Column("epoch time", "epoch_time", "seconds"),
    Column("total train time", "total_time", "duration"),
    Column("trainable params (generator)", "params_gen", "int"),
    Column("FLOPs (generator forward)", "flops_gen", "flops"),
    Column("achieved FLOP/s (train step)", "flops_per_s", "flops_s"),
    Column("peak memory", "peak_mem", "mib"),
)
QUALITY_COLUMNS = (
    Column("GT MAE in mask ↓", "gt_mae_in", "plain"),
    Column("GT MAE outside ↓", "gt_mae_out", "plain"),
    Column("success ↑", "success", "percent"),
    Column("FID ↓", "fid", "plain"),
    Column("KID ↓", "kid", "plain", sig=2),
    Column("cycle MAE ↓", "cycle_mae", "plain"),
)
THROUGHPUT_COLUMNS = (
    Column("step time (median)", "step_time_median", "seconds"),
    Column("step time (p90)", "step_time_p90", "seconds"),
    Column("images/s", "images_per_s", "plain"),
    Column("first-step compile", "compile_time", "seconds"),
    Column("CPU time / epoch", "cpu_time", "seconds"),
    Column("load avg (1 min)", "load_avg_1m", "plain", sig=2),
)


def _esc(text: Any) -> str:
    """A table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def md_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    numeric_from: int = 1,
    align: Sequence[str] | None = None,
) -> str:
    """A GitHub table; columns from `numeric_from` on are right-aligned unless `align` says."""
    align = align or ["left" if i < numeric_from else "right" for i in range(len(headers))]
    cells = [[_esc(c) for c in row] for row in rows]
    return tabulate(
        cells,
        headers=[_esc(h) for h in headers],
        tablefmt="github",
        colalign=align,
        disable_numparse=True,
    )


def _distinct(values: Iterable[str | None]) -> str:
    vals = sorted({v for v in values if v not in (None, "", "None")})
    return ", ".join(vals) if vals else NA


def _utc(ms: int | None) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M UTC") if ms else NA


# ----------------------------------------------------------------------------- sections


def _header(data: BenchData) -> list[str]:
    runs = data.runs

    def p(key: str) -> str:
        return _distinct(r.params.get(key) for r in runs)

    order = {FINISHED: 0, FAILED: 1}
    statuses = sorted({r.status for r in runs}, key=lambda st: (order.get(st, 2), st))
    counts = {st: sum(r.status == st for r in runs) for st in statuses}
    count_text = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
    devices = _distinct(_device(r) for r in runs)
    cpus = _distinct(
        f"{r.params.get('env.cpu_model', '?')} ({r.params.get('env.cpu_count', '?')} cores)"
        for r in runs
    )
    per_epoch = _distinct(
        str(int(r.params["steps_per_epoch"]) * int(r.params["batch_size"]))
        for r in runs
        if _int_or_none(r.params.get("steps_per_epoch"))
        and _int_or_none(r.params.get("batch_size"))
    )
    starts = [r.start_time for r in runs if r.start_time]
    ends = [r.end_time for r in runs if r.end_time]
    env_rows = [
        ("device", devices),
        ("CPU", cpus),
        ("TensorFlow / Keras", f"{p('env.tf_version')} / {p('env.keras_version')}"),
        ("CUDA", p("env.cuda_version")),
        ("Python", p("env.python")),
        ("MLflow", p("env.mlflow_version")),
        ("git commit", p("env.git_commit")),
        ("precision", p("precision")),
    ]
    setup_rows = [
        ("data", p("data.source")),
        ("image size", f"{p('image_size')} px"),
        ("batch size", p("batch_size")),
        ("epochs", p("epochs")),
        ("steps per epoch", p("steps_per_epoch")),
        ("images per epoch (per domain)", per_epoch),
        ("loss", p("loss")),
        ("learning rate", p("learning_rate")),
        (
            "seeds",
            ", ".join(str(s) for s in sorted({r.seed for r in runs if r.seed is not None})) or NA,
        ),
        ("variants", str(len({r.label for r in runs}))),
        ("runs", count_text),
        (
            "run period",
            f"{_utc(min(starts) if starts else None)} to {_utc(max(ends) if ends else None)}",
        ),
    ]
    lines = [
        f"# EffGAN Bench report: spec `{data.spec}`",
        "",
        "CycleGAN generators trained on the same data, for the same epochs and seeds, then timed "
        "and scored. This file is generated from the MLflow store alone (experiment "
        f"`{EXPERIMENT_PREFIX}{data.spec}`, id {data.experiment_id}) by "
        f"`python -m bench report --spec {data.spec}` (also run at the end of "
        f"`python -m bench run --spec {data.spec}`); do not edit it by hand.",
        "",
        "## Environment and setup",
        "",
        md_table(["environment", "value"], env_rows, numeric_from=2),
        "",
        md_table(["setup", "value"], setup_rows, numeric_from=2),
        "",
    ]
    if data.superseded:
        lines += [
            f"{data.superseded} older run(s) of configurations that were run again are not shown "
            "(each configuration shows its finished run, else its latest).",
            "",
        ]
    return lines


def _baseline(stats: dict[str, dict[str, Stat]]) -> dict[str, Stat] | None:
    return stats.get(BASELINE_LABEL)


def _main_tables(data: BenchData, frame: pd.DataFrame) -> list[str]:
    lines = ["## Results per variant (cf. thesis Table 4.7)", ""]
    if frame.empty:
        return [*lines, "No finished runs.", ""]
    keys = [c.key for c in COST_COLUMNS + QUALITY_COLUMNS + THROUGHPUT_COLUMNS]
    keys += [identity_key(c.key) for c in QUALITY_COLUMNS]
    stats = variant_stats(frame, keys)
    base = _baseline(stats)
    gen = {lab: frame.loc[frame["label"] == lab, "generator"].iloc[0] for lab in stats}
    lines += [
        "Mean over seeds; ± is the standard deviation across seeds (shown when there are two "
        "or more and they differ). Epoch times exclude the first step's compile. "
        + (
            f"(×r) is the ratio to the `{BASELINE_LABEL}` baseline's mean "
            "(for ↓ columns below 1 is better, for ↑ columns above 1)."
            if base
            else f"No finished `{BASELINE_LABEL}` variant with default options: ratios are skipped."
        ),
        "",
        "### Cost",
        "",
    ]
    rows = [
        [lab, gen[lab], str(s["epoch_time"].n)]
        + [c.cell(s[c.key], base and base[c.key]) for c in COST_COLUMNS]
        for lab, s in stats.items()
    ]
    lines += [
        md_table(["variant", "generator", "seeds", *[c.title for c in COST_COLUMNS]], rows, 2),
        "",
    ]

    quality = [c for c in QUALITY_COLUMNS if frame[c.key].notna().any()]
    lines += ["### Quality (test split, final epoch)", ""]
    if quality:
        rows = [
            [lab, gen[lab]] + [c.cell(s[c.key], base and base[c.key]) for c in quality]
            for lab, s in stats.items()
        ]
        ident = {c.key: stat(frame[identity_key(c.key)].tolist()) for c in quality}
        if any(s.ok for s in ident.values()):
            rows.append(
                ["identity (input unchanged)", NA]
                + [c.cell(ident[c.key], base and base[c.key]) for c in quality]
            )
        lines += [
            md_table(["variant", "generator", *[c.title for c in quality]], rows, 2),
            "",
            "GT MAE: mean absolute error (0-255 scale) against the ground-truth twin, inside the "
            "object mask and outside it (mean of both directions); success: share of translations "
            "a held-out domain classifier takes for the target domain; cycle MAE: A→B→A and "
            "B→A→B against the input. The identity row scores returning the input unchanged: "
            "a variant should beat it inside the mask and stay close to it outside.",
            "",
        ]
    else:
        lines += ["No quality metrics were logged.", ""]
    notes = sorted(
        {r.tags["effgan.fid"] for r in data.finished if not _is_number(r.tags.get("effgan.fid"))}
    )
    if notes and "fid" not in {c.key for c in quality}:
        lines += [f"FID: {'; '.join(notes)}.", ""]

    throughput = [c for c in THROUGHPUT_COLUMNS if frame[c.key].notna().any()]
    if throughput:
        rows = [[lab] + [c.cell(s[c.key]) for c in throughput] for lab, s in stats.items()]
        lines += [
            "### Throughput and cold start",
            "",
            md_table(["variant", *[c.title for c in throughput]], rows),
            "",
            "Per-epoch figures averaged over epochs, then over seeds. On a shared machine the CPU "
            "time is the steadier figure; the load average shows how busy the machine was.",
            "",
        ]
    return lines


def _is_number(text: str | None) -> bool:
    if text is None:
        return True  # no tag: nothing to report
    try:
        float(text)
    except ValueError:
        return False
    return True


def _failed_section(data: BenchData) -> list[str]:
    bad = [r for r in data.runs if not r.finished]
    if not bad:
        return []
    rows = [
        [
            r.label,
            NA if r.seed is None else r.seed,
            r.status,
            r.failure or "(no reason recorded)",
            r.run_id,
        ]
        for r in bad
    ]
    return [
        "### Failed and unfinished runs",
        "",
        "Not included in any table or plot above or below.",
        "",
        md_table(["variant", "seed", "status", "reason", "run id"], rows, numeric_from=5),
        "",
    ]


def _loss_frame(runs: Sequence[RunRecord]) -> pd.DataFrame:
    rows = [
        {"label": r.label, "seed": r.seed, "run_id": r.run_id, "loss": key, "epoch": ep, "value": v}
        for r in runs
        for key in LOSS_KEYS
        for ep, v in sorted(r.history.get(key, {}).items())
        if ep >= 1
    ]
    return pd.DataFrame(rows, columns=["label", "seed", "run_id", "loss", "epoch", "value"])


def _loss_tables(losses: pd.DataFrame) -> list[str]:
    lines = ["## Losses at selected epochs (cf. thesis Tables 4.2, 4.4, 4.6, 4.8)", ""]
    if losses.empty:
        return [*lines, "No per-epoch losses were logged.", ""]
    lines += ["Mean over seeds of each epoch's mean loss.", ""]
    keys = LOSS_KEYS[:3]
    for label in sorted(losses["label"].unique(), key=_label_key):
        sub = losses[losses["label"] == label]
        epochs = selected_epochs(int(sub["epoch"].max()))
        means = sub.groupby(["loss", "epoch"])["value"].mean()
        seeds = sub["run_id"].nunique()
        # One number of decimals per column, so a column's values line up.
        decimals = {
            k: _decimals(float(sub.loc[sub["loss"] == k, "value"].abs().max()), 4)
            if (sub["loss"] == k).any()
            else 0
            for k in keys
        }
        rows = [
            [str(ep)] + [fmt_num(means.get((k, ep), math.nan), decimals=decimals[k]) for k in keys]
            for ep in epochs
        ]
        lines += [
            f"### {label} ({seeds} seed{'s' if seeds != 1 else ''})",
            "",
            md_table(["epoch", *[LOSS_TITLES[k] for k in keys]], rows, numeric_from=0),
            "",
        ]
    return lines


def _thesis_section(data: BenchData, frame: pd.DataFrame) -> list[str]:
    stats = (
        variant_stats(frame, ["epoch_time", "total_time", "params_gen"]) if not frame.empty else {}
    )
    devices = _distinct(r.params.get("env.device_name") for r in data.finished)
    sizes = _distinct(r.params.get("image_size") for r in data.finished)
    epochs = _distinct(r.params.get("epochs") for r in data.finished)
    batches = _distinct(r.params.get("batch_size") for r in data.finished)
    base_thesis = THESIS_FIGURES[0]
    rows = []
    for fig in THESIS_FIGURES:
        ours: list[str | None] = sorted(
            {r.label for r in data.finished if r.thesis_method == fig.method},
            key=lambda lab: (" " in lab, lab),  # default options first
        ) or [None]
        tried = any(r.thesis_method == fig.method for r in data.runs)
        for label in ours:
            s = stats.get(label) if label else None
            base = _thesis_baseline(stats, label)
            row = [
                fig.name,
                f"{fig.epoch_s:.1f} s",
                fmt_ratio(fig.epoch_s / base_thesis.epoch_s),
                fmt_duration(fig.total_s),
                f"{fig.params:,}",
                label or ("(failed, see above)" if tried else "(not run)"),
                Column("", "", "seconds").cell(s["epoch_time"]) if s else NA,
                fmt_ratio(s["epoch_time"].mean / base["epoch_time"].mean) if s and base else NA,
                fmt_duration(s["total_time"].mean) if s else NA,
                fmt_int(s["params_gen"].mean) if s else NA,
            ]
            rows.append(row)
    headers = [
        "thesis generator",
        "thesis s/epoch",
        "thesis ×ResNet",
        "thesis 40 epochs",
        "thesis params",
        "our variant",
        "our s/epoch",
        "our ×ResNet",
        "our total",
        "our params",
    ]
    return [
        "## The thesis's reported figures beside ours",
        "",
        f"**Thesis columns: {THESIS_SETUP} — not measured here.** Our columns: measured on "
        f"{devices} at {sizes} px, {epochs} epochs, batch {batches}. Absolute times are not "
        "comparable across hardware and setups; the ratio to each side's own ResNet is the "
        "honest comparison. Parameter counts do not depend on the hardware or image size.",
        "",
        md_table(headers, rows, align=["left", *["right"] * 4, "left", *["right"] * 4]),
        "",
    ]


def _thesis_baseline(
    stats: dict[str, dict[str, Stat]], label: str | None
) -> dict[str, Stat] | None:
    """The ResNet with the same option suffix (e.g. the same precision), else plain `resnet`."""
    if label and " " in label:
        same = stats.get(f"{BASELINE_LABEL} {label.split(' ', 1)[1]}")
        if same:
            return same
    return stats.get(BASELINE_LABEL)


def _perf_section(data: BenchData) -> list[str]:
    if not data.perf_runs:
        return []
    lines = [
        "## Performance",
        "",
        "Performance runs found in the store (tagged `effgan.perf`; the latest finished run of "
        "each name). Utilisation is the achieved FLOP/s over the peak FLOP/s measured in the "
        "same run.",
        "",
    ]
    lines += _perf_targets(data.perf_runs)
    for kind in sorted({r.tags["effgan.perf"] for r in data.perf_runs}):
        runs = [r for r in data.perf_runs if r.tags["effgan.perf"] == kind]
        present = {k for r in runs for k in r.metrics}
        keys = [k for k in PERF_METRICS if k in present] + sorted(present - set(PERF_METRICS))
        rows = []
        for r in runs:
            rows.append(
                [
                    r.run_name,
                    _device(r),
                    r.params.get("image_size", NA),
                    r.params.get("precision", NA),
                ]
                + [_perf_cell(k, r.metrics.get(k, math.nan)) for k in keys]
            )
        lines += [
            f"### {kind}",
            "",
            md_table(["run", "device", "image size", "precision", *keys], rows, numeric_from=2),
            "",
        ]
    return lines


def _perf_targets(runs: list[RunRecord]) -> list[str]:
    """Issue 7's targets, each met or not, from the measured figures (ratios within a run)."""

    def find(kind: str, **params: str) -> RunRecord | None:
        hits = [
            r for r in runs
            if r.tags.get("effgan.perf") == kind
            and all(r.params.get(k) == v for k, v in params.items())
        ]  # fmt: skip
        return hits[-1] if hits else None

    rows: list[list[str]] = []

    def add(target: str, measured: float | None, shown: str, ok: bool | None) -> None:
        verdict = NA if ok is None or measured is None else ("met" if ok else "not met")
        rows.append([target, shown if measured is not None else NA, verdict])

    for size in ("64", "128"):
        r = find("train_step", generator="resnet", image_size=size, precision="float32")
        m = r.metrics if r else {}
        ref = m.get("reference_pytorch_step_s")
        step = m.get("step_time_median")
        shown = f"{fmt_num(step)} s = {fmt_num(m.get('ratio_to_reference', math.nan))} x reference"
        add(
            f"ResNet step at {size} px (float32, batch 1) <= 0.6 x the reference PyTorch "
            f"CycleGAN ({fmt_num(ref)} s, reported in issue 7, not measured here)",
            step if ref else None,
            shown,
            (m["ratio_to_reference"] <= 0.6) if "ratio_to_reference" in m else None,
        )
    r = find("train_step", generator="resnet", image_size="128", precision="float32")
    util = r.metrics.get("utilisation") if r else None
    add(
        "achieved FLOP/s >= 80% of the measured float32 matmul peak at 128 px",
        util,
        f"{fmt_num(100 * util) if util else NA} %",
        util >= 0.8 if util else None,
    )
    r = find("pipeline")
    ratio = r.metrics.get("ratio_to_fastest_step") if r else None
    add(
        "data pipeline >= 10 x the images/s of the fastest generator's step",
        ratio,
        f"{fmt_num(ratio)} x" if ratio else NA,
        ratio >= 10 if ratio else None,
    )
    r = find("harness_overhead")
    if r:
        ratio, in_run = r.metrics.get("ratio"), r.metrics.get("in_run_ratio")
        add(
            "a run through bench costs <= 2% more wall time per epoch than the bare trainer",
            ratio,
            f"{fmt_num(ratio, 4)} (A/B, two runs); {fmt_num(in_run, 4)} (within the harness run)",
            in_run <= 1.02 if in_run else None,
        )
    if not rows:
        return []
    return [
        "### Targets (issue 7)",
        "",
        md_table(
            ["target", "measured", "verdict"], rows, numeric_from=1, align=["left", "right", "left"]
        ),
        "",
        "FLOPs follow `effgan/flops.py` (transpose convolutions counted at output resolution, "
        "which overstates them by about 7% of the ResNet's total); a training step is counted as "
        "3 x its forward passes (18 generator + 12 discriminator forward-equivalents), while the "
        "step (one gradient call for both generators, one for both critics) does about 18 + 14, "
        "so the convention does not flatter utilisation. What holds utilisation below the matmul "
        "peak, by probe: the memory-bound work between the convolutions (instance norm about "
        "20% and reflection padding about 13% of a 3x3 residual conv's forward+backward time at "
        "32x32x128), the narrow 3-channel layers at the ends, and batch 1, which leaves small "
        "GEMMs at 64 px; utilisation rises with size (see the 64/128/256 px rows).",
        "",
    ]


def _device(rec: RunRecord) -> str:
    kind, name = rec.params.get("env.device_kind"), rec.params.get("env.device_name")
    return ": ".join(x for x in (kind, name) if x) or NA


def _perf_cell(key: str, value: float) -> str:
    if not math.isfinite(value):
        return NA
    if key.endswith("flops_per_s"):
        v, unit = _scaled(value, "FLOP/s")
        return f"{fmt_num(v)} {unit}"
    if key == "utilisation":
        return f"{fmt_num(100 * value)} %"
    if "time" in key:
        return f"{fmt_num(value)} s"
    return fmt_num(value)


def _runs_section(data: BenchData) -> list[str]:
    rows = [
        [r.label, NA if r.seed is None else r.seed, r.status, r.run_id, r.run_name]
        for r in data.runs
    ]
    return [
        "## MLflow runs",
        "",
        "Open any row in the MLflow UI: run `nox -s ui`, then "
        f"`http://127.0.0.1:5000/#/experiments/{data.experiment_id}/runs/<run id>` "
        "(or select runs there and press Compare).",
        "",
        md_table(["variant", "seed", "status", "run id", "run name"], rows, numeric_from=5),
        "",
    ]


# ----------------------------------------------------------------------------- plots


def _style() -> dict[str, Any]:
    """Fixed rc settings: the seaborn whitegrid look, without touching global state."""
    import seaborn as sns

    return {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("notebook", font_scale=0.9),
        "font.family": "DejaVu Sans",
        "figure.dpi": 100,
        "savefig.dpi": 100,
        "svg.hashsalt": "effgan",
        "path.simplify": True,
    }


def _palette(labels: Sequence[str]) -> dict[str, Any]:
    """Same colour for a variant in every plot."""
    import seaborn as sns

    return dict(zip(labels, sns.color_palette("colorblind", max(len(labels), 1)), strict=False))


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, format="png", bbox_inches="tight", metadata={"Software": None})


def _legend_outside(ax: Axes) -> None:
    if ax.get_legend() is not None:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)


@dataclass(frozen=True)
class Image:
    """A written plot: file name (inside the images folder), title and caption."""

    name: str
    title: str
    caption: str


def plot_losses(losses: pd.DataFrame, labels: Sequence[str], out_dir: Path) -> list[Image]:
    """One chart per loss: variants as lines, the band is ± sd across seeds."""
    import seaborn as sns
    from matplotlib.figure import Figure

    images = []
    colours = _palette(labels)
    for key in LOSS_KEYS:
        sub = losses[losses["loss"] == key]
        if sub.empty:
            continue
        fig = Figure(figsize=(7, 3.6))
        ax = fig.subplots()
        sns.lineplot(
            data=sub,
            x="epoch",
            y="value",
            hue="label",
            hue_order=[lab for lab in labels if lab in set(sub["label"])],
            palette=colours,
            errorbar="sd",
            marker="o",
            ax=ax,
        )
        ax.set(title=LOSS_TITLES[key], xlabel="epoch", ylabel=key)
        ax.xaxis.get_major_locator().set_params(integer=True)
        _legend_outside(ax)
        name = f"losses-{key}.png"
        _save(fig, out_dir / name)
        images.append(Image(name, LOSS_TITLES[key], f"`{key}` per epoch; band: ± sd across seeds."))
    return images


def plot_epoch_time(frame: pd.DataFrame, labels: Sequence[str], out_dir: Path) -> list[Image]:
    """Mean epoch time per variant; error bar: sd across seeds; dots: the seeds."""
    import seaborn as sns
    from matplotlib.figure import Figure

    if frame["epoch_time"].notna().sum() == 0:
        return []
    fig = Figure(figsize=(7, 0.45 * len(labels) + 1.2))
    ax = fig.subplots()
    kw = {"data": frame, "x": "epoch_time", "y": "label", "order": labels, "ax": ax}
    sns.barplot(
        **kw,
        hue="label",
        hue_order=labels,
        palette=_palette(labels),
        errorbar="sd",
        capsize=0.2,
        legend=False,
        alpha=0.8,
    )
    sns.stripplot(**kw, color="black", size=4, jitter=False)
    ax.set(
        xlabel="mean epoch time (s, compile excluded)", ylabel="", title="Epoch time per variant"
    )
    _save(fig, out_dir / "epoch-time.png")
    return [
        Image(
            "epoch-time.png",
            "Epoch time per variant",
            "Bars: mean over seeds; error bars: ± sd across seeds; dots: each seed's mean.",
        )
    ]


FRONTIER_QUALITY = (
    ("gt_mae_in", "GT MAE in mask (lower is better)", False),
    ("success", "translation success (higher is better)", True),
)


def plot_frontiers(
    frame: pd.DataFrame, labels: Sequence[str], out_dir: Path
) -> tuple[list[Image], list[str]]:
    """Quality against params and against epoch time, Pareto-optimal variants marked."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    images, notes = [], []
    colours = _palette(labels)
    stats = variant_stats(frame, ["params_gen", "epoch_time", *[q for q, _, _ in FRONTIER_QUALITY]])
    for qkey, qtitle, higher_better in FRONTIER_QUALITY:
        fig = Figure(figsize=(11, 4.2))
        axes = fig.subplots(1, 2)
        drawn = False
        for ax, (ckey, ctitle) in zip(
            axes,
            (("params_gen", "trainable params (generator)"), ("epoch_time", "mean epoch time (s)")),
            strict=True,
        ):
            pts = [
                (lab, s[ckey].mean, s[qkey].mean)
                for lab, s in stats.items()
                if s[ckey].ok and s[qkey].ok
            ]
            if not pts:
                continue
            drawn = True
            front = pareto_mask(
                [c for _, c, _ in pts], [-q if higher_better else q for _, _, q in pts]
            )
            for (lab, c, q), best in zip(pts, front, strict=True):
                ax.scatter(
                    [c],
                    [q],
                    s=90 if best else 45,
                    color=colours[lab],
                    edgecolor="black" if best else "none",
                    linewidth=1.5,
                    zorder=3,
                    marker="*" if best else "o",
                )
                ax.annotate(lab, (c, q), textcoords="offset points", xytext=(5, 4), fontsize=7)
            frontier = sorted((c, q) for (_, c, q), best in zip(pts, front, strict=True) if best)
            ax.plot(
                [c for c, _ in frontier],
                [q for _, q in frontier],
                color="black",
                linewidth=1,
                linestyle=":",
                zorder=2,
            )
            ident = stat(frame[identity_key(qkey)].tolist())
            if ident.ok:
                ax.axhline(ident.mean, color="grey", linestyle="--", linewidth=1)
                ax.annotate(
                    "identity (input unchanged)",
                    (0.01, ident.mean),
                    xycoords=("axes fraction", "data"),
                    fontsize=7,
                    color="grey",
                    xytext=(0, 3),
                    textcoords="offset points",
                )
            costs = [c for _, c, _ in pts]
            if min(costs) > 0 and max(costs) / min(costs) > 20:
                ax.set_xscale("log")
            if ckey == "params_gen":
                ax.xaxis.set_major_formatter(EngFormatter(sep=""))
            ax.set(xlabel=ctitle, ylabel=qtitle)
            best_labels = ", ".join(lab for (lab, _, _), b in zip(pts, front, strict=True) if b)
            notes.append(f"Pareto-optimal for {qkey} vs {ckey}: {best_labels}.")
        if not drawn:
            continue
        fig.suptitle(f"Efficiency frontier: {qkey}")
        name = f"frontier-{qkey}.png"
        _save(fig, out_dir / name)
        images.append(
            Image(
                name,
                f"Efficiency frontier ({qkey})",
                "Variant means; stars with a dotted line: Pareto-optimal (no other "
                "variant is both cheaper and better); dashed: the identity baseline.",
            )
        )
    return images, notes


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """MLflow draws a progress bar per download; the report's output should stay quiet."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    old = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _last_sample(client: MlflowClient, run_id: str) -> str | None:
    """Artifact path of the run's last-epoch sample grid, if it logged any."""
    try:
        files = client.list_artifacts(run_id, "samples")
    except Exception:  # an unreachable artifact store must not sink the whole report
        return None
    pngs = sorted(f.path for f in files if not f.is_dir and f.path.endswith(".png"))
    return pngs[-1] if pngs else None


def plot_samples(
    tracking_uri: str, runs: Sequence[RunRecord], labels: Sequence[str], out_dir: Path
) -> list[Image]:
    """Each variant's last-epoch sample grid (lowest seed), stacked with the variant as title."""
    import matplotlib.image as mpimg
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    grids: list[tuple[str, str, np.ndarray]] = []
    with tempfile.TemporaryDirectory(prefix="effgan-report-") as tmp, _no_progress_bars():
        for label in labels:
            for rec in (r for r in runs if r.label == label):  # runs are sorted by seed
                path = _last_sample(client, rec.run_id)
                if path is None:
                    continue
                local = client.download_artifacts(rec.run_id, path, tmp)
                grids.append((label, path.rsplit("/", 1)[-1], mpimg.imread(local)))
                break
    if not grids:
        return []
    width = 8.0
    heights = [width * g.shape[0] / g.shape[1] for _, _, g in grids]
    fig = Figure(figsize=(width, sum(heights) + 0.35 * len(grids)))
    axes = fig.subplots(len(grids), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
    for ax, (label, name, grid) in zip(axes, grids, strict=True):
        ax.imshow(grid, interpolation="nearest")
        ax.set_title(f"{label} ({name.removesuffix('.png')})", fontsize=9, loc="left")
        ax.set_axis_off()
    _save(fig, out_dir / "samples.png")
    return [
        Image(
            "samples.png",
            "Sample translations",
            "Each variant's sample grid at its last epoch (first seed), as logged by the run "
            "(input, translation and ground truth per the worker's grid layout).",
        )
    ]


def _plots(
    tracking_uri: str,
    data: BenchData,
    frame: pd.DataFrame,
    losses: pd.DataFrame,
    images_dir: Path,
    link_prefix: str,
) -> list[str]:
    from matplotlib import rc_context

    images_dir.mkdir(parents=True, exist_ok=True)
    labels = sorted({r.label for r in data.finished}, key=_label_key)
    with rc_context(_style()):
        images = plot_losses(losses, labels, images_dir)
        images += plot_epoch_time(frame, labels, images_dir) if not frame.empty else []
        frontier, notes = plot_frontiers(frame, labels, images_dir) if not frame.empty else ([], [])
        images += frontier
        images += plot_samples(tracking_uri, data.finished, labels, images_dir)
    written = {img.name for img in images}
    for pattern in OWNED_IMAGE_GLOBS:
        for stale in images_dir.glob(pattern):
            if stale.name not in written:
                stale.unlink()
    lines = ["## Plots", ""]
    if not images:
        return [*lines, "Nothing to plot: no finished runs with metrics.", ""]
    for img in images:
        lines += [
            f"### {img.title}",
            "",
            f"![{img.title}]({link_prefix}{img.name})",
            "",
            img.caption,
            "",
        ]
        if img.name.startswith("frontier-"):
            qkey = img.name.removeprefix("frontier-").removesuffix(".png")
            lines += [n for n in notes if n.startswith(f"Pareto-optimal for {qkey} ")] + [""]
    return lines


# ----------------------------------------------------------------------------- entry points


def _more_reports_section(report_dir: Path, this_report: Path) -> list[str]:
    """Links to the other generated reports: other specs' (report/<spec>/REPORT.md) and the
    Optuna studies' (`python -m studies report` writes studies/<name>.md)."""
    root = Path(__file__).resolve().parent.parent
    found = sorted(p for p in (root / "studies").glob("*.md") if p.name != "README.md")
    found += sorted(p for p in (root / "report").glob("*/REPORT.md") if p != this_report.resolve())
    if not found:
        return []
    links = []
    for p in found:
        name = p.parent.name if p.name == "REPORT.md" else f"study {p.stem}"
        links.append(f"- [{name}]({Path(os.path.relpath(p, report_dir.resolve())).as_posix()})")
    return ["## More reports", "", *links, ""]


def render_report(
    tracking_uri: str, data: BenchData, images_dir: Path, link_prefix: str, out_path: Path
) -> str:
    """The report's Markdown; writes its images into `images_dir`."""
    frame = run_frame(data.finished)
    losses = _loss_frame(data.finished)
    sections = [
        _header(data),
        _main_tables(data, frame),
        _failed_section(data),
        _loss_tables(losses),
        _thesis_section(data, frame),
        _perf_section(data),
        _plots(tracking_uri, data, frame, losses, images_dir, link_prefix),
        _more_reports_section(out_path.parent, out_path),
        _runs_section(data),
    ]
    text = "\n".join(line for section in sections for line in section)
    return text.rstrip("\n") + "\n"


def write_report(
    tracking_uri: str,
    spec_name: str,
    out_path: Path = Path("REPORT.md"),
    images_dir: Path | None = None,
) -> Path:
    """Write REPORT.md for `spec_name` from the store, images beside it (default `report/`)."""
    out_path = Path(out_path)
    images_dir = Path(images_dir) if images_dir is not None else out_path.parent / "report"
    data = load_bench(tracking_uri, spec_name)
    rel = Path(os.path.relpath(images_dir.resolve(), out_path.parent.resolve())).as_posix()
    prefix = "" if rel == "." else f"{rel}/"
    text = render_report(tracking_uri, data, images_dir, prefix, out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text, encoding="utf-8")
    return out_path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `report` subcommand's options, so `python -m bench report` can reuse them."""
    parser.add_argument(
        "--spec", default="quick", help="spec name (experiment effgan-bench/<spec>)"
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
        "sqlite:///<cwd>/mlruns/mlflow.db)",
    )
    parser.add_argument("--out", type=Path, default=Path("REPORT.md"), help="REPORT.md path")
    parser.add_argument(
        "--images-dir",
        type=Path,
        default=None,
        help="folder for the plots (default: report/ beside --out)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.report", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    uri = (
        args.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or (f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}")
    )
    try:
        path = write_report(uri, args.spec, args.out, args.images_dir)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
