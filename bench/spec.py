"""Benchmark specs: a TOML file in, a list of fully resolved, keyed runs out.

Why TOML: it is data, never code (read with tomllib, nothing is evaluated), and every
error can name the file and the line (syntax) or the key and where it sits (content).
Everything that can be checked without training is checked at load time: unknown keys,
generators and options, types, losses and precisions. What only the generator can judge
(e.g. `n_blocks = 0`, an image size it cannot take) is left to the run, which then fails
alone with the reason while the rest of the benchmark goes on.

Relative paths in a spec (a data folder, a weights file) are relative to the spec file.
They are only ever read; the harness writes only under its output folder.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from effgan.registry import generator_entry, resolve_options
from effgan.train import PRECISIONS, TrainConfig

SPECS_DIR = Path(__file__).resolve().parent / "specs"
REPO_ROOT = Path(__file__).resolve().parent.parent
LOSSES = ("bce", "lsgan")  # effgan.losses.ADVERSARIAL_LOSSES, without importing TF ops here
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# key -> (type, default). `float` accepts ints; `int` refuses bools.
DATA_KEYS: dict[str, tuple[type, Any]] = {
    "source": (str, "cans"),
    "image_size": (int, 64),
    "n_train_a": (int, 300),
    "n_train_b": (int, 200),
    "n_test": (int, 50),
    "seed": (int, 0),  # the data set's seed (cans rendering), not the training seed
}
_T = TrainConfig()
TRAIN_KEYS: dict[str, tuple[type, Any]] = {
    "epochs": (int, _T.epochs),
    "steps_per_epoch": (int, None),
    "batch_size": (int, _T.batch_size),
    "seeds": (list, [0]),
    "loss": (str, _T.loss),
    "precision": (str, _T.precision),
    "learning_rate": (float, _T.learning_rate),
    "beta_1": (float, _T.beta_1),
    "jit_compile": (bool, _T.jit_compile),
    "cycle_weight": (float, _T.cycle_weight),
    "identity_weight": (float, _T.identity_weight),
    "timeout_s": (float, 0.0),  # 0: no timeout
    "eval_every": (int, 0),  # 0: quality at the final epoch only; N: every N epochs; or a list
    "fid": (bool, False),
    "inception_weights": (str, None),
}
# What a variant or an axis may set besides generator options.
OVERRIDE_KEYS = {**TRAIN_KEYS, "image_size": DATA_KEYS["image_size"]}
NOT_AXES = {"seeds", "timeout_s", "eval_every", "fid", "inception_weights"}
# TrainConfig fields that do not change what is trained, so they stay out of the key.
NOT_IN_KEY = {"checkpoint_every", "keep_checkpoints"}


class SpecError(ValueError):
    """A spec that cannot be run; the message names the file and what to change."""


@dataclass(frozen=True)
class DataSpec:
    """Where the training data comes from; `source` is "cans" or an absolute folder path."""

    source: str = "cans"
    n_train_a: int = 300
    n_train_b: int = 200
    n_test: int = 50
    seed: int = 0

    def load(self, image_size: int):
        """The CycleData for this spec (cans are rendered once, then cached on disk)."""
        from effgan.data.load import load_data

        if self.source == "cans":
            return load_data(
                "cans",
                image_size,
                seed=self.seed,
                n_train_a=self.n_train_a,
                n_train_b=self.n_train_b,
                n_test=self.n_test,
            )
        return load_data(self.source, image_size)

    def key_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"] = portable_path(self.source)
        if self.source != "cans":  # counts and seed only apply to the cans
            d = {"source": d["source"]}
        return d


@dataclass
class RunSpec:
    """One expanded run: everything the worker needs, and the key that names it."""

    spec: str
    label: str
    variant: str
    key: str
    config: TrainConfig
    data: DataSpec = field(default_factory=DataSpec)
    eval_epochs: list[int] = field(default_factory=list)  # cheap quality; final always
    fid: bool = False
    inception_weights: str | None = None
    timeout_s: float = 0.0
    axes: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The MLflow run name."""
        return f"{self.config.generator}-{self.key}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["config"] = self.config.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunSpec:
        d = dict(d)
        d["config"] = TrainConfig(**d["config"])
        d["data"] = DataSpec(**d["data"])
        return cls(**d)


@dataclass
class Spec:
    """A loaded, validated spec file (before grid expansion)."""

    name: str
    description: str
    path: Path
    data: dict[str, Any]
    train: dict[str, Any]
    axes: dict[str, list[Any]]
    variants: list[dict[str, Any]]


# ---------------------------------------------------------------------------- loading
def known_specs() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.toml"))


def spec_path(name_or_path: str | Path) -> Path:
    """A bare name means bench/specs/<name>.toml; anything else is a path to a TOML file."""
    text = str(name_or_path)
    if text.endswith(".toml") or "/" in text or "\\" in text:
        path = Path(text).expanduser().resolve()
        if not path.is_file():
            raise SpecError(f"spec file {path} does not exist")
        return path
    path = SPECS_DIR / f"{text}.toml"
    if not NAME_RE.match(text) or not path.is_file():
        raise SpecError(
            f"unknown spec {text!r}; known specs: {', '.join(known_specs())} "
            "(or pass the path of a .toml file)"
        )
    return path


def load_spec(name_or_path: str | Path) -> Spec:
    """Read and validate a spec; every run is expanded once here so errors surface early."""
    path = spec_path(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:  # its message carries the line and column
        raise SpecError(f"{path}: malformed TOML: {err}") from None
    where = path.name
    _check_keys(
        raw, {"name", "description", "data", "train", "axes", "variants"}, where, "top level"
    )
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name) or ".." in name:
        raise SpecError(
            f"{where}: name must be letters, digits, '_', '-' or '.' (got {name!r}); "
            "it names the experiment and the output folder"
        )
    data = _section(raw, "data", DATA_KEYS, where)
    train = _section(raw, "train", TRAIN_KEYS, where)
    if data["source"] != "cans":
        data["source"] = str(_existing_path(data["source"], path.parent, f"{where} [data] source"))
    if train["inception_weights"] is not None:
        train["inception_weights"] = str(
            _existing_path(
                train["inception_weights"], path.parent, f"{where} [train] inception_weights"
            )
        )
    variants = raw.get("variants")
    if not isinstance(variants, list) or not variants:
        raise SpecError(f"{where}: needs at least one [[variants]] table with a `generator`")
    axes = raw.get("axes", {})
    if not isinstance(axes, dict):
        raise SpecError(f"{where}: [axes] must be a table of lists")
    spec = Spec(name, str(raw.get("description", "")), path, data, train, axes, variants)
    expand(spec)  # validates variants, options, axes and uniqueness
    return spec


def _check_keys(table: dict[str, Any], allowed: set[str], where: str, section: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise SpecError(
            f"{where}: unknown key {unknown[0]!r} in {section}; allowed: {', '.join(sorted(allowed))}"
        )


def _section(raw: dict[str, Any], name: str, keys: dict[str, tuple[type, Any]], where: str) -> dict:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise SpecError(f"{where}: [{name}] must be a table")
    _check_keys(table, set(keys), where, f"[{name}]")
    out = {k: default for k, (_, default) in keys.items()}
    for k, v in table.items():
        out[k] = _typed(k, v, keys[k][0], f"{where} [{name}]")
    return out


def _typed(key: str, value: Any, kind: type, where: str) -> Any:
    """Check one value's type; floats accept ints, ints refuse bools."""
    if key == "eval_every" and isinstance(value, list):
        if not all(isinstance(e, int) and not isinstance(e, bool) and e > 0 for e in value):
            raise SpecError(f"{where}: eval_every must be an integer or a list of epochs")
        return sorted(set(value))
    if key == "steps_per_epoch" and value == 0:
        return None  # 0 means "the whole epoch"
    ok = (
        (kind is int and isinstance(value, int) and not isinstance(value, bool))
        or (kind is float and isinstance(value, int | float) and not isinstance(value, bool))
        or (kind is not int and kind is not float and isinstance(value, kind))
    )
    if not ok:
        raise SpecError(f"{where}: {key} must be {kind.__name__} (got {value!r})")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(f"{where}: {key} must be finite (got {value!r})")
    if key == "seeds" and not (value and all(isinstance(s, int) for s in value)):
        raise SpecError(f"{where}: seeds must be a non-empty list of integers (got {value!r})")
    if key == "loss" and value not in LOSSES:
        raise SpecError(f"{where}: unknown loss {value!r}; choose one of {', '.join(LOSSES)}")
    if key == "precision" and value not in PRECISIONS:
        raise SpecError(
            f"{where}: unknown precision {value!r}; choose one of {', '.join(PRECISIONS)}"
        )
    positive = {"epochs", "batch_size", "steps_per_epoch", "n_train_a", "n_train_b", "n_test"}
    if key in positive and value is not None and value < 1:
        raise SpecError(f"{where}: {key} must be a positive integer (got {value!r})")
    if key in {"learning_rate", "eval_every", "timeout_s"} and value < 0:
        raise SpecError(f"{where}: {key} must not be negative (got {value!r})")
    return value


def _existing_path(value: str, base: Path, where: str) -> Path:
    """Resolve a path the spec reads (relative to the spec file); it must exist."""
    path = (base / Path(value).expanduser()).resolve()
    if not path.exists():
        raise SpecError(f"{where}: {value!r} does not exist (looked for {path})")
    return path


def portable_path(value: str) -> str:
    """A path as it enters a run key: relative to the repo when inside it, so clones agree."""
    if value == "cans" or not value:
        return value
    path = Path(value)
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return path.as_posix()


def confined(base: Path, *parts: str) -> Path:
    """`base/parts...`, refusing anything that would resolve outside `base` (e.g. `..`)."""
    base = Path(base).resolve()
    path = base.joinpath(*parts).resolve()
    if not path.is_relative_to(base):
        raise SpecError(f"refusing to write outside {base}: {'/'.join(parts)!r}")
    return path


# ---------------------------------------------------------------------------- expansion
def expand(spec: Spec) -> list[RunSpec]:
    """Every run of the spec: each variant x its axis grid x the seeds, keyed and labelled."""
    runs: list[RunSpec] = []
    seen: dict[str, str] = {}
    labels: set[tuple[str, int]] = set()
    for i, variant in enumerate(spec.variants, start=1):
        runs_v = _expand_variant(spec, variant, i)
        for run in runs_v:
            where = f"{spec.path.name} variants[{i}]"
            if run.key in seen:
                raise SpecError(
                    f"{where}: {run.label} (seed {run.config.seed}) is the same run as "
                    f"{seen[run.key]} (key {run.key}); remove one"
                )
            if (run.label, run.config.seed) in labels:
                raise SpecError(
                    f"{where}: label {run.label!r} is used twice for different configs; "
                    "give the variants distinct `label`s"
                )
            seen[run.key] = f"{run.label} (seed {run.config.seed})"
            labels.add((run.label, run.config.seed))
        runs += runs_v
    return runs


def _expand_variant(spec: Spec, variant: Any, index: int) -> list[RunSpec]:
    if not isinstance(variant, dict) or "generator" not in variant:
        raise SpecError(f"{spec.path.name} variants[{index}]: each variant needs a `generator`")
    gen = variant["generator"]
    where = f"{spec.path.name} variants[{index}] ({gen})"
    try:
        generator_entry(gen)
    except KeyError as err:  # UnknownGeneratorError lists the known names
        raise SpecError(f"{where}: {err}") from None
    option_names = set(resolve_options(gen))
    options: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, value in variant.items():
        if key in ("generator", "label", "axes"):
            continue
        _classify(key, value, gen, option_names, options, overrides, where, spec.path.parent)
    label = variant.get("label", gen)
    if not isinstance(label, str) or not label:
        raise SpecError(f"{where}: label must be a non-empty string")
    axes = {**spec.axes, **variant.get("axes", {})}
    for key, values in axes.items():
        if key in NOT_AXES or (key not in option_names and key not in OVERRIDE_KEYS):
            raise SpecError(_unknown_key_message(key, where + " axes", gen, option_names))
        if not isinstance(values, list) or not values:
            raise SpecError(f"{where}: axis {key!r} must be a non-empty list of values")
    train = {**spec.train, **overrides}
    runs = []
    for combo in itertools.product(*axes.values()):
        point = dict(zip(axes, combo, strict=True))
        opts, over = dict(options), dict(train)
        for key, value in point.items():
            _classify(key, value, gen, option_names, opts, over, f"{where} axes", spec.path.parent)
        suffix = ",".join(f"{k}={v}" for k, v in point.items())
        full_label = f"{label}[{suffix}]" if suffix else label
        for seed in over["seeds"]:
            runs.append(_run_spec(spec, gen, full_label, label, opts, over, seed, point))
    return runs


def _classify(key, value, gen, option_names, options, overrides, where, base: Path) -> None:
    """Put one variant/axis entry where it belongs: generator option or train override."""
    if key in option_names:
        if key == "weights" and isinstance(value, str):  # a file the generator reads
            value = str(_existing_path(value, base, f"{where} weights"))
        options[key] = value
    elif key in OVERRIDE_KEYS:
        overrides[key] = _typed(key, value, OVERRIDE_KEYS[key][0], where)
    else:
        raise SpecError(_unknown_key_message(key, where, gen, option_names))


def _unknown_key_message(key: str, where: str, gen: str, option_names: set[str]) -> str:
    return (
        f"{where}: unknown key {key!r}; {gen} takes options: "
        f"{', '.join(sorted(option_names)) or 'none'}; run settings: "
        f"{', '.join(sorted(OVERRIDE_KEYS))}"
    )


def _run_spec(spec, gen, label, variant, options, train, seed, point) -> RunSpec:
    image_size = train.get("image_size", spec.data["image_size"])
    config = TrainConfig(
        generator=gen,
        generator_options=resolve_options(gen, **options),
        image_size=image_size,
        batch_size=train["batch_size"],
        epochs=train["epochs"],
        steps_per_epoch=train["steps_per_epoch"],
        loss=train["loss"],
        cycle_weight=train["cycle_weight"],
        identity_weight=train["identity_weight"],
        learning_rate=train["learning_rate"],
        beta_1=train["beta_1"],
        precision=train["precision"],
        jit_compile=train["jit_compile"],
        seed=int(seed),
    )
    d = spec.data
    data = DataSpec(d["source"], d["n_train_a"], d["n_train_b"], d["n_test"], d["seed"])
    return RunSpec(
        spec=spec.name,
        label=label,
        variant=variant,
        key=run_key(config, data),
        config=config,
        data=data,
        eval_epochs=eval_epochs(train["eval_every"], config.epochs),
        fid=train["fid"],
        inception_weights=train["inception_weights"],
        timeout_s=train["timeout_s"],
        axes=point,
    )


def eval_epochs(eval_every: int | list[int], epochs: int) -> list[int]:
    """The epochs with a quality evaluation; the final epoch always has one."""
    if isinstance(eval_every, list):
        chosen = {e for e in eval_every if e <= epochs}
    else:
        chosen = set(range(eval_every, epochs + 1, eval_every)) if eval_every else set()
    return sorted(chosen | {epochs})


def run_key(config: TrainConfig, data: DataSpec) -> str:
    """First 12 hex digits of the sha256 of the resolved config's canonical JSON."""
    cfg = {k: v for k, v in config.to_dict().items() if k not in NOT_IN_KEY}
    opts = dict(cfg["generator_options"])
    if isinstance(opts.get("weights"), str):
        opts["weights"] = portable_path(opts["weights"])
    cfg["generator_options"] = opts
    for k in ("learning_rate", "beta_1", "cycle_weight", "identity_weight"):
        cfg[k] = float(cfg[k])
    text = json.dumps(
        {"config": cfg, "data": data.key_dict()}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def select(runs: list[RunSpec], only: list[str] | None) -> list[RunSpec]:
    """Runs whose label, variant label, generator or key (prefix) is in `only`."""
    if not only:
        return runs
    chosen = [
        r
        for r in runs
        if any(
            name in (r.label, r.variant, r.config.generator) or r.key.startswith(name)
            for name in only
        )
    ]
    if not chosen:
        names = sorted({r.variant for r in runs} | {r.config.generator for r in runs})
        raise SpecError(f"--only {' '.join(only)} matches no run; variants: {', '.join(names)}")
    return chosen


__all__ = [
    "DataSpec",
    "RunSpec",
    "Spec",
    "SpecError",
    "confined",
    "expand",
    "known_specs",
    "load_spec",
    "run_key",
    "select",
]
