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


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (small sizes, a few steps; runs on 2 CPU cores)."""
    _install(session, "test", "postgres")
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
