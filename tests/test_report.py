"""REPORT.md rendering from a real (tiny) MLflow SQLite store built here.

The store is filled by hand with the worker's schema (2 variants x 2 seeds x 3 epochs, one
failed run, one superseded rerun, one perf run, a sample PNG), so the report's numbers can
be checked against values known in advance. Nothing here trains anything.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

mlflow = pytest.importorskip("mlflow")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from PIL import Image  # noqa: E402

from bench import report  # noqa: E402

T0 = 1_780_000_000_000  # fixed run timestamps (ms): the report may show them
EPOCHS = 3
FID_NOTE = "unavailable (install effgan[fid])"

# Fabricated per-variant figures: (epoch_time_mean per seed, params, gt_mae_in, success).
VARIANTS = {
    "resnet": {
        "generator": "resnet",
        "family": "resnet",
        "method": "baseline",
        "epoch_time": (10.0, 12.0),
        "params": 2_855_362,
        "flops": 4.0e9,
        "gt_mae_in": (20.0, 22.0),
        "success": (0.9, 0.8),
        "loss_scale": 1.0,
    },
    "efficientnet_split_v1": {
        "generator": "efficientnet_split_v1",
        "family": "efficientnet",
        "method": "II",
        "epoch_time": (5.0, 6.0),  # mean 5.5 = 0.50 x resnet's 11.0
        "params": 622_305,
        "flops": 1.0e9,
        "gt_mae_in": (30.0, 32.0),
        "success": (0.6, 0.5),
        "loss_scale": 2.0,
    },
}


def _metrics(v: dict, seed_i: int) -> list[Metric]:
    """The worker's metrics for one run: per-epoch, step-0 and final values."""
    out: list[Metric] = []

    def put(key: str, value: float, step: int) -> None:
        out.append(Metric(key, float(value), T0 + step, step))

    for key, value in {
        "params_trainable_gen": v["params"],
        "params_total_gen": v["params"] + 1000,
        "params_trainable_disc": 2_766_529,
        "flops_gen_forward": v["flops"],
        "flops_train_step": 6 * v["flops"],
    }.items():
        put(key, value, 0)
    et = v["epoch_time"][seed_i]
    for ep in range(1, EPOCHS + 1):
        loss = v["loss_scale"] * (10.0 - ep + seed_i)
        for key, value in {
            "cycle_loss_total": loss,
            "gen_ab_loss_total": loss + 1,
            "gen_ba_loss_total": loss + 2,
            "disc_a_loss": 0.5,
            "disc_b_loss": 0.6,
            "epoch_time": et,
            "step_time_median": et / 100,
            "images_per_s": 100 / et,
            "achieved_flops_per_s": 6 * v["flops"] * 100 / et,
        }.items():
            put(key, value, ep)
    put("compile_time", 20.0, 1)
    final = {
        "epoch_time_mean": et,
        "epoch_time_sd": 0.1,
        "total_train_time": EPOCHS * et,
        "peak_memory_bytes": 512 * 2**20,
        "gt_mae_in": v["gt_mae_in"][seed_i],
        "gt_mae_out": 5.0,
        "success": v["success"][seed_i],
        "cycle_mae": 3.0,
        "identity_mae_in": 40.0,
        "identity_mae_out": 0.0,
    }
    for key, value in final.items():
        put(key, value, EPOCHS)
    return out


def _params(generator: str, seed: int) -> list[Param]:
    values = {
        "generator": generator,
        "image_size": "32",
        "batch_size": "1",
        "epochs": str(EPOCHS),
        "steps_per_epoch": "4",
        "loss": "bce",
        "precision": "float32",
        "seed": str(seed),
        "data.source": "cans",
        "env.device_kind": "CPU",
        "env.device_name": "Test CPU",
        "env.cpu_model": "Test CPU",
        "env.cpu_count": "2",
        "env.tf_version": "2.21.0",
        "env.keras_version": "3.15.0",
        "env.cuda_version": "none",
        "env.python": "3.11.2",
        "env.git_commit": "abc1234",
        "env.mlflow_version": "3.17.2",
    }
    return [Param(k, v) for k, v in values.items()]


def _run(
    client: MlflowClient,
    exp: str,
    label: str,
    generator: str,
    seed: int,
    key: str,
    status: str,
    start: int,
    tags: dict[str, str] | None = None,
) -> str:
    base = {
        "effgan.key": key,
        "effgan.spec": "tiny",
        "effgan.generator": generator,
        "effgan.label": label,
        "effgan.seed": str(seed),
        "effgan.status": status,
        "effgan.device_kind": "CPU",
        "effgan.precision": "float32",
        "effgan.fid": FID_NOTE,
    }
    run = client.create_run(exp, start_time=T0 + start, run_name=f"{generator}-{key}")
    rid = run.info.run_id
    client.log_batch(
        rid,
        params=_params(generator, seed),
        tags=[RunTag(k, v) for k, v in {**base, **(tags or {})}.items()],
    )
    client.set_terminated(rid, status=status, end_time=T0 + start + 1000)
    return rid


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    """A SQLite store with the worker's schema; returns (uri, {description: run id})."""
    root = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("effgan-bench/tiny", artifact_location=(root / "art").as_uri())
    sample = root / "epoch-0003.png"
    Image.fromarray(np.arange(8 * 24 * 3, dtype=np.uint8).reshape(8, 24, 3)).save(sample)
    ids: dict[str, str] = {}
    n = 0
    for label, v in VARIANTS.items():
        for seed_i, seed in enumerate((0, 1)):
            n += 1
            key = f"k{label[:3]}{seed}"
            tags = {"effgan.family": v["family"], "effgan.thesis_method": v["method"]}
            if label == "resnet" and seed == 0:  # an earlier failed attempt at the same key
                _run(client, exp, label, v["generator"], seed, key, "FAILED", n * 10 - 5, tags)
            rid = _run(client, exp, label, v["generator"], seed, key, "FINISHED", n * 10, tags)
            client.log_batch(rid, metrics=_metrics(v, seed_i))
            client.log_artifact(rid, str(sample), "samples")
            ids[f"{label}/{seed}"] = rid
    ids["failed"] = _run(
        client,
        exp,
        "efficientnet_b3",
        "efficientnet_b3",
        0,
        "kb3",
        "FAILED",
        100,
        {
            "effgan.family": "efficientnet",
            "effgan.thesis_method": "I",
            "effgan.failure": "OOM: ResourceExhaustedError | allocating 4 GiB",
        },
    )
    perf = client.create_experiment("effgan-perf", artifact_location=(root / "perf").as_uri())
    prid = client.create_run(perf, start_time=T0, run_name="resnet-128px").info.run_id
    client.log_batch(
        prid,
        metrics=[
            Metric(k, v, T0, 0)
            for k, v in {
                "step_time_median": 0.5,
                "achieved_flops_per_s": 1.7e11,
                "peak_flops_per_s": 2.1e11,
                "utilisation": 0.81,
            }.items()
        ],
        params=[Param("image_size", "128"), Param("precision", "float32")],
        tags=[RunTag("effgan.perf", "train_step"), RunTag("effgan.status", "FINISHED")],
    )
    client.set_terminated(prid, "FINISHED", end_time=T0 + 1)
    return uri, ids


@pytest.fixture(scope="module")
def rendered(
    store: tuple[str, dict[str, str]], tmp_path_factory: pytest.TempPathFactory
) -> list[Path]:
    """The report rendered twice into separate folders (for the determinism check)."""
    uri, _ = store
    outs = []
    for name in ("a", "b"):
        out = tmp_path_factory.mktemp(name) / "REPORT.md"
        assert report.write_report(uri, "tiny", out) == out
        outs.append(out)
    return outs


def _row(text: str, first_cell: str) -> str:
    """The table row whose first cell is `first_cell`."""
    rows = [line for line in text.splitlines() if line.startswith(f"| {first_cell} ")]
    assert rows, f"no row {first_cell!r}"
    return rows[0]


def test_sections_present(rendered: list[Path]) -> None:
    text = rendered[0].read_text()
    for heading in (
        "# EffGAN Bench report: spec `tiny`",
        "## Environment and setup",
        "## Results per variant (cf. thesis Table 4.7)",
        "### Quality (test split, final epoch)",
        "## Losses at selected epochs",
        "## The thesis's reported figures beside ours",
        "## Performance",
        "## Plots",
        "## MLflow runs",
    ):
        assert heading in text
    assert "python -m bench report --spec tiny" in text
    assert "Test CPU (2 cores)" in text and "abc1234" in text
    assert "2026-" in text  # the runs' own times, nothing else
    assert "4 finished, 1 failed" in text
    assert "1 older run(s)" in text  # the superseded failed attempt
    assert "nox -s ui" in text


def test_ratios_and_rows(rendered: list[Path]) -> None:
    text = rendered[0].read_text()
    resnet = _row(text, "resnet")
    assert "11.0 ± 1.4 s (×1.00)" in resnet
    assert "2,855,362 (×1.00)" in resnet
    split = _row(text, "efficientnet_split_v1")
    assert "5.50 ± 0.71 s (×0.50)" in split  # 5.5 / 11.0, the fabricated ratio
    assert "622,305 (×0.22)" in split
    assert "1.00 GFLOP (×0.25)" in split
    assert "512 MiB (×1.00)" in split
    identity = _row(text, "identity (input unchanged)")
    assert "40.0 (×1.90)" in identity  # 40 / mean(20, 22)
    assert f"FID: {FID_NOTE}" in text


def test_failed_run_listed_with_reason(
    rendered: list[Path], store: tuple[str, dict[str, str]]
) -> None:
    text = rendered[0].read_text()
    row = _row(text, "efficientnet_b3")
    assert "FAILED" in row and "OOM: ResourceExhaustedError \\| allocating 4 GiB" in row
    assert store[1]["failed"] in row


def test_loss_tables_and_thesis(rendered: list[Path]) -> None:
    text = rendered[0].read_text()
    loss = text.split("### efficientnet_split_v1 (2 seeds)")[1]
    # epoch 1: 2 x (10 - 1 + seed) for seeds 0 and 1 = 18 and 20, mean 19; the G losses add 1, 2
    assert re.search(r"\|\s+1 \|\s+19\.00 \|\s+20\.00 \|\s+21\.00 \|", loss)
    thesis = text.split("## The thesis's reported figures beside ours")[1].split("\n## ")[0]
    assert "reported in the thesis on a GTX 1080 Ti at 256 px, 40 epochs, batch 1" in thesis
    assert "not measured here" in thesis
    v1 = _row(thesis, "EfficientNet split V1 (Method II)")
    assert "54.0 s" in v1 and "×0.80" in v1 and "36 min 4 s" in v1 and "×0.50" in v1
    assert "(failed, see above)" in _row(thesis, "Complete EfficientNet-B3 (Method I)")
    assert "(not run)" in _row(thesis, "EfficientNet split V2 (Method III)")
    assert "81.0 %" in text  # the perf run's utilisation


def test_images_written_and_linked(rendered: list[Path]) -> None:
    out = rendered[0]
    text = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    expected = {f"report/losses-{k}.png" for k in report.LOSS_KEYS}
    expected |= {
        "report/epoch-time.png",
        "report/frontier-gt_mae_in.png",
        "report/frontier-success.png",
        "report/samples.png",
    }
    assert set(links) == expected
    for link in links:
        assert (out.parent / link).stat().st_size > 1000
    assert "Pareto-optimal for gt_mae_in vs params_gen: resnet, efficientnet_split_v1." in text


def test_deterministic(rendered: list[Path]) -> None:
    a, b = rendered
    assert a.read_bytes() == b.read_bytes()
    pngs = sorted(p.name for p in (a.parent / "report").glob("*.png"))
    assert pngs == sorted(p.name for p in (b.parent / "report").glob("*.png"))
    for name in pngs:
        assert (a.parent / "report" / name).read_bytes() == (
            b.parent / "report" / name
        ).read_bytes(), name


def test_unknown_spec_lists_known(store: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    with pytest.raises(report.ReportError, match="specs with runs: tiny"):
        report.write_report(store[0], "nope", tmp_path / "REPORT.md")
    with pytest.raises(report.ReportError, match="no MLflow store"):
        report.write_report(f"sqlite:///{tmp_path / 'missing.db'}", "tiny", tmp_path / "R.md")
    assert not (tmp_path / "missing.db").exists()


def test_helpers() -> None:
    assert report.selected_epochs(40) == [1, 10, 20, 30, 40]
    assert report.selected_epochs(3) == [1, 2, 3]
    assert report.fmt_duration(3600 + 43 * 60 + 27) == "1 h 43 min 27 s"
    assert report.pareto_mask([1, 2, 3], [3, 1, 2]) == [True, True, False]
    assert report.identity_key("gt_mae_in") == "identity_mae_in"
