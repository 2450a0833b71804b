"""What a run ran on, recorded once per run as `env.*` params.

Why: a time or a FLOP/s figure means nothing without the device, the library versions and
the code version that produced it; this machine is also shared, so the core count and the
CPU model matter as much as the GPU.
"""

from __future__ import annotations

import platform
import socket
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def git_state(repo: Path = REPO_ROOT) -> tuple[str, bool | None]:
    """(commit, dirty) of the repo holding bench/; ("unknown", None) outside git."""

    def git(*args: str) -> str:
        out = subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", None


def collect() -> dict[str, str]:
    """The environment as flat `env.*` strings (imports TensorFlow: call it in the worker)."""
    import keras
    import mlflow
    import numpy as np
    import tensorflow as tf

    from effgan.device import cpu_count, cpu_model, device_kind, device_name

    build = dict(tf.sysconfig.get_build_info())
    commit, dirty = git_state()
    env = {
        "device_kind": device_kind(),
        "device_name": device_name(),
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "tf_version": tf.__version__,
        "keras_version": keras.__version__,
        "cuda_version": build.get("cuda_version") or "none",
        "cudnn_version": build.get("cudnn_version") or "none",
        "numpy_version": np.__version__,
        "mlflow_version": mlflow.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "git_commit": commit,
        "git_dirty": "unknown" if dirty is None else str(dirty).lower(),
    }
    return {f"env.{k}": str(v) for k, v in env.items()}
