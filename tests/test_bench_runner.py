"""The harness end to end on a tiny spec: one benchmark into a temporary SQLite store, shared
by every test here (each child pays the TensorFlow import and a first-step compile)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_store, spec_toml, sqlite_ok

mlflow = pytest.importorskip("mlflow")

from bench import tracker  # noqa: E402
from bench.__main__ import main as bench_main  # noqa: E402
from bench.runner import BusyError, harness_lock, list_runs, run_benchmark  # noqa: E402
from effgan.train import LOSS_NAMES  # noqa: E402

pytestmark = pytest.mark.slow

VARIANTS = [
    {"generator": "resnet", "n_blocks": 1},
    # n_blocks = 0 is rejected by the generator when the run builds it: that run fails alone
    {"generator": "mobile_resnet", "axes": {"n_blocks": [1, 0]}},
]


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("bench")
    spec = root / "tiny.toml"
    spec.write_text(spec_toml("tiny", VARIANTS))
    uri = make_store(root / "mlruns")
    lines: list[str] = []
    t0 = time.monotonic()
    results = run_benchmark(
        spec, uri, out=root / "runs", report=root / "REPORT.md", echo=lines.append
    )
    seconds = time.monotonic() - t0
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("effgan-bench/tiny")
    runs = client.search_runs([exp.experiment_id])
    by_label = {r.data.tags["effgan.label"]: r for r in runs}
    return SimpleNamespace(
        root=root, spec=spec, uri=uri, results=results, seconds=seconds, lines=lines,
        client=client, exp=exp, runs=runs, by_label=by_label,
    )  # fmt: skip


def test_each_run_is_recorded(bench) -> None:
    assert len(bench.results) == 3 and len(bench.runs) == 3, bench.lines
    statuses = {r.data.tags["effgan.label"]: r.info.status for r in bench.runs}
    assert statuses == {
        "resnet": "FINISHED",
        "mobile_resnet[n_blocks=1]": "FINISHED",
        "mobile_resnet[n_blocks=0]": "FAILED",
    }, bench.lines


def test_finished_run_has_params_tags_and_metrics(bench) -> None:
    run = bench.by_label["resnet"]
    key = run.data.tags["effgan.key"]
    assert run.info.run_name == f"resnet-{key}"
    p = run.data.params
    assert p["generator"] == "resnet" and p["gen.n_blocks"] == "1" and p["image_size"] == "32"
    assert p["weights"] == "random" and p["data.source"] == "cans" and p["seed"] == "0"
    for name in (
        "env.device_kind",
        "env.cpu_model",
        "env.tf_version",
        "env.git_commit",
        "env.python",
    ):
        assert p[name], name
    t = run.data.tags
    assert t["effgan.status"] == "FINISHED" and t["effgan.family"] == "resnet"
    assert t["effgan.thesis_method"] == "baseline" and t["effgan.device_kind"] in ("CPU", "GPU")
    assert t["effgan.spec"] == "tiny" and t["effgan.precision"] == "float32"
    assert bench.by_label["mobile_resnet[n_blocks=1]"].data.tags["effgan.thesis_method"] == "none"

    def steps(name: str) -> list[int]:
        return [m.step for m in bench.client.get_metric_history(run.info.run_id, name)]

    per_epoch = [*LOSS_NAMES, "epoch_time", "images_per_s", "cpu_time", "load_avg_1m",
                 "achieved_flops_per_s", "step_time_median", "compile_time"]  # fmt: skip
    for name in per_epoch:
        assert steps(name) == [1], name
    for name in (
        "params_trainable_gen",
        "params_total_disc",
        "flops_gen_forward",
        "flops_train_step",
    ):
        assert steps(name) == [0], name
    for name in (
        "peak_memory_bytes",
        "total_train_time",
        "epoch_time_mean",
        "cycle_mae",
        "gt_mae_in",
    ):
        assert steps(name) == [1], name
    m = run.data.metrics
    assert m["flops_train_step"] == 3 * (6 * m["flops_gen_forward"] + 4 * m["flops_disc_forward"])
    assert m["params_trainable_gen"] > 0 and m["peak_memory_bytes"] > 0


def test_finished_run_has_artifacts(bench) -> None:
    rid = bench.by_label["resnet"].info.run_id

    def listing(path: str | None = None) -> set[str]:
        return {a.path for a in bench.client.list_artifacts(rid, path)}

    assert {"config.json", "epoch_times.csv", "samples", "plots", "summaries"} <= listing()
    assert "samples/epoch-0001.png" in listing("samples")
    assert "plots/losses.png" in listing("plots")
    assert {"summaries/gen.txt", "summaries/disc.txt"} <= listing("summaries")
    csv = Path(bench.client.download_artifacts(rid, "epoch_times.csv", str(bench.root))).read_text()
    assert csv.splitlines()[0].startswith("epoch,wall_time,step_median,step_p90,images_per_s")


def test_rejected_axis_value_fails_alone(bench) -> None:
    failed = bench.by_label["mobile_resnet[n_blocks=0]"]
    assert failed.data.tags["effgan.status"] == "FAILED"
    assert failed.data.tags["effgan.failure_kind"] == "config"
    assert "n_blocks must be at least 1" in failed.data.tags["effgan.failure"]


def test_report_is_written(bench) -> None:
    report = bench.root / "REPORT.md"
    if not report.exists():  # bench.report not there: the run says so and goes on
        assert any("report skipped" in line for line in bench.lines), bench.lines
        return
    assert bench.by_label["resnet"].info.run_id in report.read_text()


def test_rerun_skips_finished_and_rejected(bench) -> None:
    lines: list[str] = []
    t0 = time.monotonic()
    results = run_benchmark(
        bench.spec, bench.uri, out=bench.root / "runs", report=False, echo=lines.append
    )
    assert results == [] and time.monotonic() - t0 < 30, lines
    assert len(bench.client.search_runs([bench.exp.experiment_id])) == 3
    assert sqlite_ok(bench.uri)
    plans = {
        p.run.label: (p.action, p.status)
        for p in list_runs(bench.spec, bench.uri, bench.root / "runs")
    }
    assert plans["resnet"] == ("skip", "FINISHED")
    assert plans["mobile_resnet[n_blocks=0]"] == ("skip", "FAILED")


def test_list_command(bench, capsys) -> None:
    assert bench_main(["list", "--spec", str(bench.spec), "--tracking-uri", bench.uri,
                       "--out", str(bench.root / "runs")]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("FINISHED") == 2 and "mobile_resnet[n_blocks=0]" in out


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9", "sqlite:////nonexistent-dir/x/mlflow.db"])
def test_unreachable_store_fails_before_training(bench, uri: str, tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(tracker.StoreError, match="cannot be reached|does not exist"):
        run_benchmark(bench.spec, uri, out=tmp_path / "runs", report=False, echo=lambda s: None)
    assert time.monotonic() - t0 < 20
    assert not (tmp_path / "runs").exists()  # nothing started


def test_cli_errors_are_clear(capsys) -> None:
    assert bench_main(["run", "--spec", "nope"]) == 2
    assert "unknown spec 'nope'" in capsys.readouterr().err


def test_timeout_kills_the_run(bench) -> None:
    """A child past its spec's timeout_s is killed (its process group) and FAILED; the
    harness goes on. 2 s ends it while it is still importing TensorFlow: cheap to test."""
    spec = bench.root / "hang.toml"
    spec.write_text(
        spec_toml("hang", [{"generator": "resnet", "n_blocks": 1}], train={"timeout_s": 2})
    )
    t0 = time.monotonic()
    (result,) = run_benchmark(
        spec, bench.uri, out=bench.root / "runs", report=False, echo=lambda s: None
    )
    assert time.monotonic() - t0 < 60
    assert result.status == "FAILED" and result.kind == "timeout", result.failure
    run = bench.client.get_run(result.run_id)
    assert run.info.status == "FAILED" and run.data.tags["effgan.failure"].startswith("timeout")


def test_one_harness_per_spec(bench) -> None:
    with harness_lock(bench.root / "runs", "tiny"), pytest.raises(BusyError, match="another"):
        run_benchmark(
            bench.spec, bench.uri, out=bench.root / "runs", report=False, echo=lambda s: None
        )
