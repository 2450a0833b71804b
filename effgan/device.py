"""Where training runs and how much memory it took: GPU when visible, CPU otherwise."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys

import tensorflow as tf


def configure_gpus() -> list[str]:
    """Enable memory growth on every visible GPU (so peak memory means something); names."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Growth can only be set before the GPU is first used.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    return [g.name for g in gpus]


def device_kind() -> str:
    """'GPU' when TensorFlow sees one, else 'CPU'."""
    return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"


def device_name() -> str:
    """A human name for the training device: the GPU model, or the CPU model."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return str(details.get("device_name", gpus[0].name))
    return cpu_model()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_count() -> int:
    """Cores this process may use (the affinity mask, not the host's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def peak_memory_bytes() -> int:
    """Peak device memory on GPU (TensorFlow's allocator), else peak RSS of this process."""
    if tf.config.list_physical_devices("GPU"):
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)  # Linux reports KiB
