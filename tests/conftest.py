"""Shared fixtures: tiny benchmark specs and throw-away MLflow stores.

Tiny means 32 px, a couple of steps, a handful of images: every child process still pays the
TensorFlow import and the first-step compile, so tests share runs through module-scoped
fixtures rather than training per test.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY_DATA = {"source": "cans", "image_size": 32, "n_train_a": 4, "n_train_b": 4, "n_test": 2}
TINY_TRAIN = {"epochs": 1, "steps_per_epoch": 2, "seeds": [0], "fid": False, "timeout_s": 600}
TINY_VARIANTS = [
    {"generator": "resnet", "n_blocks": 1},
    {"generator": "mobile_resnet", "n_blocks": 1},
]


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def spec_toml(
    name: str,
    variants: list[dict[str, Any]],
    data: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
    axes: dict[str, list[Any]] | None = None,
) -> str:
    """A spec file's text from plain dicts (tiny defaults for data and train)."""
    lines = [f"name = {_toml_value(name)}", "", "[data]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in {**TINY_DATA, **(data or {})}.items()]
    lines += ["", "[train]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in {**TINY_TRAIN, **(train or {})}.items()]
    if axes:
        lines += ["", "[axes]"] + [f"{k} = {_toml_value(v)}" for k, v in axes.items()]
    for variant in variants:
        lines += ["", "[[variants]]"] + [f"{k} = {_toml_value(v)}" for k, v in variant.items()]
    return "\n".join(lines) + "\n"


@pytest.fixture
def write_spec(tmp_path: Path) -> Callable[..., Path]:
    """write_spec(name, variants, data=None, train=None, axes=None) -> path of a spec file."""

    def write(name: str, variants: list[dict[str, Any]], **kwargs: Any) -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(spec_toml(name, variants, **kwargs))
        return path

    return write


@pytest.fixture
def tiny_spec(write_spec: Callable[..., Path]) -> Path:
    """Two variants (resnet and mobile_resnet, one block each), 32 px, 1 epoch of 2 steps."""
    return write_spec("tiny", TINY_VARIANTS)


def make_store(root: Path) -> str:
    """A fresh SQLite tracking URI under `root` (artifacts go to `root/artifacts`)."""
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture
def mlflow_uri(tmp_path: Path) -> str:
    """A throw-away SQLite MLflow store for one test."""
    return make_store(tmp_path / "mlruns")


def sqlite_ok(uri: str) -> bool:
    """True when the store's database passes SQLite's integrity check."""
    path = uri.removeprefix("sqlite:///")
    with sqlite3.connect(path) as con:
        return con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
