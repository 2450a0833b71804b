"""Study specs: a TOML file says what to search, how long each trial trains, and what to optimise.

Why a spec file: a study outlives one process. Workers on other machines, a resumed study and
the report all need the same search space, so it lives in a file rather than in flags. Every
mistake a spec can hold (unknown parameter path, empty range, unknown metric, pruning a
multi-objective study) is raised here, before any storage is touched or any model trained.

Parameter paths:
- `<generator>.<option>`: an option of one generator, e.g. `resnet.n_blocks`; searched only in
  trials that picked that generator (a conditional parameter). A family name works too
  (`effgan.phi` means the first registered generator of family `effgan`).
- `<option>` alone: a run setting (`learning_rate`, `cycle_weight`, ...) or an option
  every searched generator takes (`upsampling`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import spec as bench_spec
from effgan.registry import generator_entry, list_generators, resolve_options

STUDIES_DIR = Path(__file__).resolve().parent

# Metrics a trial can be judged by: what a harness run logs (bench.worker: final timing and
# quality, model size and FLOPs at step 0; effgan.metrics: ground truth, success, FID/KID).
_REGIONS = [f"{k}{r}" for k in ("mae", "psnr", "ssim") for r in ("", "_in", "_out")]
KNOWN_METRICS = (
    *(f"{p}_{d}{m}" for p in ("gt", "identity") for d in ("", "ab_", "ba_") for m in _REGIONS),
    *("cycle_mae", "cycle_mae_a", "cycle_mae_b"),
    *("success", "success_ab", "success_ba", "classifier_accuracy"),
    *("fid", "fid_ab", "fid_ba", "kid", "kid_ab", "kid_ba"),
    *("epoch_time_mean", "epoch_time_sd", "total_train_time", "peak_memory_bytes"),
    *("params_trainable_gen", "params_total_gen", "flops_gen_forward", "flops_train_step"),
)
DIRECTIONS = {"minimize": "minimize", "min": "minimize", "maximize": "maximize", "max": "maximize"}
SAMPLERS = ("tpe", "nsga2", "random")
PRUNERS = ("none", "median", "successive_halving")
# What a trial may set besides generator options: the harness's per-run settings.
TRAIN_FIELDS = set(bench_spec.OVERRIDE_KEYS)
# Settings a study must not search: they are the trial budget or bookkeeping, not the design.
NOT_SEARCHABLE = set(bench_spec.NOT_AXES) | {"epochs", "steps_per_epoch"}


class SpecError(ValueError):
    """A study spec that cannot be run; the message says what to change."""


@dataclass(frozen=True)
class Param:
    """One searched parameter: where it goes (a generator option or a TrainConfig field)."""

    path: str  # as written in the spec; also the Optuna parameter name
    name: str  # the option or field it sets
    kind: str  # int | float | categorical
    generators: tuple[str, ...] = ()  # generator options: the generators it applies to
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    @property
    def is_generator_option(self) -> bool:
        return bool(self.generators)

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for a value (duck-typed so this module never imports optuna)."""
        if self.kind == "int":
            return trial.suggest_int(
                self.path, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.kind == "float":
            return trial.suggest_float(
                self.path, float(self.low), float(self.high), step=self.step, log=self.log
            )
        return trial.suggest_categorical(self.path, list(self.choices))


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # minimize | maximize


@dataclass(frozen=True)
class StorageSettings:
    """Heartbeat settings: a trial whose worker is silent for `grace_period` s is failed and,
    up to `max_retry` times, queued again."""

    heartbeat_interval: int = 60
    grace_period: int = 180
    max_retry: int = 2
    timeout: float = 60.0  # SQLite busy timeout / PostgreSQL connect timeout, seconds


@dataclass
class StudySpec:
    """A validated study spec."""

    name: str
    path: Path | None
    generators: tuple[str, ...]
    params: tuple[Param, ...]
    objectives: tuple[Objective, ...]
    n_trials: int
    sampler: str = "tpe"
    seed: int | None = 0
    pruner: str = "none"
    pruner_options: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    storage: StorageSettings = field(default_factory=StorageSettings)
    description: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def experiment(self) -> str:
        """The MLflow experiment every trial of this study logs to."""
        return f"effgan-study/{self.name}"

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def fingerprint(self) -> str:
        """A hash of what defines the study's trials, to refuse joining a study with another spec."""
        keys = ("search", "objectives", "data", "train")
        payload = {k: self.raw.get(k) for k in keys}
        payload["study_name"] = self.name
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def params_for(self, generator: str) -> list[Param]:
        """The parameters a trial that picked `generator` searches (conditional ones included)."""
        return [p for p in self.params if not p.is_generator_option or generator in p.generators]

    def split(self, values: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """Trial params -> (generator, generator options, TrainConfig overrides)."""
        generator = values.get("generator", self.generators[0])
        options: dict[str, Any] = {}
        train: dict[str, Any] = {}
        for p in self.params_for(generator):
            if p.path in values:
                (options if p.is_generator_option else train)[p.name] = values[p.path]
        return generator, options, train


# ----------------------------------------------------------------------------------- loading


def resolve_spec_path(spec: str | Path) -> Path:
    """A spec name (`blocks`) means `studies/blocks.toml`; anything else is a path."""
    path = Path(spec)
    if path.suffix != ".toml" and not path.exists():
        path = STUDIES_DIR / f"{spec}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in STUDIES_DIR.glob("*.toml")))
        raise SpecError(f"no study spec {str(spec)!r} (looked for {path}); shipped specs: {known}")
    return path


def load_spec(spec: str | Path, metrics: tuple[str, ...] | None = None) -> StudySpec:
    """Read and validate a study spec (a name under studies/ or a path to a TOML file)."""
    path = resolve_spec_path(spec)
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML: {e}") from None
    return parse_spec(raw, path=path, metrics=metrics)


def parse_spec(
    raw: dict[str, Any], path: Path | None = None, metrics: tuple[str, ...] | None = None
) -> StudySpec:
    """Validate a spec dict; `metrics` are the known metric names (default: the harness's)."""
    where = f"{path}: " if path else ""
    try:
        return _parse(raw, path, metrics or known_metrics())
    except SpecError as e:
        raise SpecError(f"{where}{e}") from None


def _table(raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise SpecError(f"[{key}] must be a table")
    return value


def _parse(raw: dict[str, Any], path: Path | None, metrics: tuple[str, ...]) -> StudySpec:
    known_sections = {"study", "search", "objectives", "sampler", "pruner", "data", "train"}
    known_sections |= {"storage"}
    try:
        return _parse_checked(raw, path, metrics, known_sections)
    except bench_spec.SpecError as e:
        raise SpecError(str(e)) from None


def _parse_checked(
    raw: dict[str, Any], path: Path | None, metrics: tuple[str, ...], known_sections: set[str]
) -> StudySpec:
    unknown = set(raw) - known_sections
    if unknown:
        raise SpecError(f"unknown section(s) {sorted(unknown)}; known: {sorted(known_sections)}")
    study = _table(raw, "study")
    extra = set(study) - {"name", "description", "n_trials"}
    if extra:
        raise SpecError(f"[study] has unknown key(s) {sorted(extra)}; it takes name, "
                        "description, n_trials")  # fmt: skip
    name = study.get("name") or (path.stem if path else None)
    if not isinstance(name, str) or not bench_spec.NAME_RE.match(name) or ".." in name:
        raise SpecError(
            f"[study] name must be letters, digits, '_', '-' or '.' (got {name!r}); it names "
            "the study, its MLflow experiment and its files"
        )
    n_trials = study.get("n_trials", 20)
    if not isinstance(n_trials, int) or n_trials < 1:
        raise SpecError(f"[study] n_trials must be a positive integer (got {n_trials!r})")

    search = _table(raw, "search")
    generators = _parse_generators(search.get("generators", search.get("generator")))
    params = tuple(
        _parse_param(p, bounds, generators) for p, bounds in _table(search, "params").items()
    )
    for g in generators:
        _check_applies(g, params)
    unknown_search = set(search) - {"generators", "generator", "params"}
    if unknown_search:
        raise SpecError(f"[search] has unknown key(s) {sorted(unknown_search)}")

    objectives = _parse_objectives(raw.get("objectives"), metrics)
    sampler = _table(raw, "sampler")
    sampler_name = sampler.get("name", "tpe")
    if sampler_name not in SAMPLERS:
        raise SpecError(f"unknown sampler {sampler_name!r}; choose one of {SAMPLERS}")
    pruner = dict(_table(raw, "pruner"))
    pruner_name = pruner.pop("name", "none")
    if pruner_name not in PRUNERS:
        raise SpecError(f"unknown pruner {pruner_name!r}; choose one of {PRUNERS}")
    if pruner_name != "none" and len(objectives) > 1:
        raise SpecError(
            f"pruner {pruner_name!r} needs a single objective: Optuna does not support pruning "
            'multi-objective studies (Trial.report raises for them). Use name = "none" or one '
            "objective."
        )

    data, train = _bench_sections(raw, path)
    storage = _table(raw, "storage")
    try:
        settings = StorageSettings(**storage)
    except TypeError:
        fields = [f.name for f in dataclasses.fields(StorageSettings)]
        raise SpecError(f"[storage] takes only {fields}") from None
    ints = (settings.heartbeat_interval, settings.grace_period, settings.max_retry)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in ints):
        raise SpecError("[storage] heartbeat_interval, grace_period and max_retry are integers")
    if settings.heartbeat_interval < 1 or settings.grace_period <= settings.heartbeat_interval:
        raise SpecError(
            "[storage] needs heartbeat_interval >= 1 and grace_period > heartbeat_interval "
            "(a live trial must get several heartbeats in before it is declared dead)"
        )
    spec = StudySpec(
        name=name,
        path=path,
        generators=generators,
        params=params,
        objectives=objectives,
        n_trials=n_trials,
        sampler=sampler_name,
        seed=sampler.get("seed", 0),
        pruner=pruner_name,
        pruner_options=pruner,
        data=data,
        train=train,
        storage=settings,
        description=study.get("description", ""),
        raw=raw,
    )
    _check_train_config(spec)
    return spec


def _generator_for(name: str) -> str | None:
    """A generator name, or the first generator of a family with that name, or None."""
    names = list_generators()
    if name in names:
        return name
    family = [g for g in names if generator_entry(g).family == name]
    return family[0] if family else None


def _parse_generators(value: Any) -> tuple[str, ...]:
    if value is None:
        raise SpecError("[search] needs `generators = [...]` (one or more generator names)")
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise SpecError("[search] generators is empty")
    resolved = []
    for n in names:
        g = _generator_for(n)
        if g is None:
            raise SpecError(f"unknown generator {n!r}; known: {', '.join(list_generators())}")
        resolved.append(g)
    if len(set(resolved)) != len(resolved):
        raise SpecError(f"[search] generators lists a generator twice: {names}")
    return tuple(resolved)


def _parse_param(path: str, bounds: Any, generators: tuple[str, ...]) -> Param:
    if not isinstance(bounds, dict):
        raise SpecError(
            f"parameter {path!r}: give a table, e.g. {{ low = 1, high = 10 }} or "
            "{ choices = [...] }"
        )
    if path == "generator":
        raise SpecError("search generators with `[search] generators = [...]`, not a parameter")
    prefix, _, option = path.rpartition(".")
    if prefix:
        g = _generator_for(prefix)
        if g is None:
            raise SpecError(
                f"unknown parameter path {path!r}: {prefix!r} is not a generator or family; "
                f"known generators: {', '.join(list_generators())}"
            )
        if g not in generators:
            raise SpecError(
                f"parameter {path!r} belongs to generator {g!r}, which [search] generators "
                f"does not list ({', '.join(generators)})"
            )
        _check_option(g, option, path)
        targets: tuple[str, ...] = (g,)
    elif option in TRAIN_FIELDS:
        if option in NOT_SEARCHABLE:
            raise SpecError(f"{option!r} is part of the trial budget; set it in [train]")
        targets = ()
    else:
        takers = tuple(g for g in generators if option in resolve_options(g))
        if not takers:
            raise SpecError(
                f"unknown parameter path {path!r}: not a run setting "
                f"({', '.join(sorted(TRAIN_FIELDS - NOT_SEARCHABLE))}) nor an option of "
                f"{', '.join(generators)}; use '<generator>.<option>' for one generator's option"
            )
        missing = set(generators) - set(takers)
        if missing:
            raise SpecError(
                f"parameter {path!r} is not an option of {sorted(missing)}; "
                f"write it per generator, e.g. '{takers[0]}.{option}'"
            )
        targets = takers
    return _parse_range(path, option, bounds, targets)


def _check_option(generator: str, option: str, path: str) -> None:
    options = resolve_options(generator)
    if option not in options:
        raise SpecError(
            f"unknown parameter path {path!r}: generator {generator!r} takes "
            f"{', '.join(sorted(options)) or 'no options'}"
        )


def _parse_range(path: str, option: str, b: dict[str, Any], targets: tuple[str, ...]) -> Param:
    extra = set(b) - {"low", "high", "step", "log", "choices", "type"}
    if extra:
        raise SpecError(f"parameter {path!r}: unknown key(s) {sorted(extra)}")
    if "choices" in b:
        choices = tuple(b["choices"])
        if not choices:
            raise SpecError(f"parameter {path!r}: empty choices")
        return Param(path, option, "categorical", targets, choices=choices)
    if "low" not in b or "high" not in b:
        raise SpecError(f"parameter {path!r}: give low and high (or choices)")
    low, high, step, log = b["low"], b["high"], b.get("step"), bool(b.get("log", False))
    nums = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in nums):
        raise SpecError(f"parameter {path!r}: low, high and step must be numbers")
    if not all(math.isfinite(v) for v in nums):
        raise SpecError(f"parameter {path!r}: low, high and step must be finite")
    kind = b.get("type") or ("int" if all(isinstance(v, int) for v in nums) else "float")
    if kind not in ("int", "float"):
        raise SpecError(f"parameter {path!r}: type must be int or float (got {kind!r})")
    if low > high:
        raise SpecError(f"parameter {path!r}: empty range, low {low} > high {high}")
    if kind == "int" and (int(low) != low or int(high) != high):
        raise SpecError(f"parameter {path!r}: an int range needs integer bounds")
    if log and low <= 0:
        raise SpecError(f"parameter {path!r}: a log range needs low > 0")
    if step is not None and (step <= 0 or (log and step)):
        raise SpecError(f"parameter {path!r}: step must be positive and not combined with log")
    return Param(path, option, kind, targets, low=low, high=high, step=step, log=log)


def _check_applies(generator: str, params: tuple[Param, ...]) -> None:
    """One option searched twice for a generator (`upsampling` and `resnet.upsampling`)."""
    names = [p.name for p in params if generator in p.generators]
    if len(set(names)) != len(names):
        raise SpecError(f"generator {generator!r}: an option is searched twice ({names})")


def _parse_objectives(value: Any, metrics: tuple[str, ...]) -> tuple[Objective, ...]:
    if not value:
        raise SpecError(
            'give one or more [[objectives]] with metric and direction, e.g. metric = "gt_mae_in"'
        )
    if not isinstance(value, list):
        raise SpecError("objectives must be [[objectives]] tables")
    out = []
    for o in value:
        if not isinstance(o, dict):
            raise SpecError("each [[objectives]] entry is a table with metric and direction")
        metric, direction = o.get("metric"), o.get("direction", "minimize")
        if metric not in metrics:
            raise SpecError(f"unknown metric {metric!r}; known: {', '.join(metrics)}")
        if direction not in DIRECTIONS:
            raise SpecError(f"objective {metric!r}: direction must be minimize or maximize")
        out.append(Objective(metric, DIRECTIONS[direction]))
    if len({o.metric for o in out}) != len(out):
        raise SpecError("an objective metric is listed twice")
    return tuple(out)


def _bench_sections(raw: dict[str, Any], path: Path | None) -> tuple[dict, dict]:
    """[data] and [train] exactly as a benchmark spec reads them (same keys, same checks)."""
    where = path.name if path else "study spec"
    data = bench_spec._section(raw, "data", bench_spec.DATA_KEYS, where)
    train = bench_spec._section(raw, "train", bench_spec.TRAIN_KEYS, where)
    if data["source"] != "cans":
        base = path.parent if path else Path.cwd()
        data["source"] = str(bench_spec._existing_path(data["source"], base, f"{where} [data]"))
    if len(train["seeds"]) != 1:
        raise SpecError("[train] seeds: a trial is one run; give exactly one seed")
    return data, train


def run_spec(spec: StudySpec, values: dict[str, Any], label: str) -> bench_spec.RunSpec:
    """The harness run for one trial's parameter values (the same checks a benchmark makes)."""
    generator, options, overrides = spec.split(values)
    variant = {"generator": generator, "label": label, **options, **overrides}
    bspec = bench_spec.Spec(
        name=f"study-{spec.name}",
        description=spec.description,
        path=spec.path or STUDIES_DIR / f"{spec.name}.toml",
        data=spec.data,
        train=spec.train,
        axes={},
        variants=[variant],
    )
    try:
        (run,) = bench_spec.expand(bspec)
    except bench_spec.SpecError as e:
        raise SpecError(str(e)) from None
    return run


def _check_train_config(spec: StudySpec) -> None:
    """Resolve each generator's run at the search space's corners, before any training."""
    for g in spec.generators:
        for corner in ("low", "high"):
            values: dict[str, Any] = {"generator": g}
            for p in spec.params_for(g):
                if p.kind == "categorical":
                    values[p.path] = p.choices[0 if corner == "low" else -1]
                else:
                    v = getattr(p, corner)
                    values[p.path] = int(v) if p.kind == "int" else float(v)
            try:
                run_spec(spec, values, "check").config.validate()
            except (ValueError, TypeError, KeyError) as e:
                raise SpecError(
                    f"generator {g!r} at the {corner} corner of the space: {e}"
                ) from None


def known_metrics() -> tuple[str, ...]:
    """The metric names an objective may use."""
    return KNOWN_METRICS
