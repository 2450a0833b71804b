"""`python -m studies {run,worker,create,report,show}`: Optuna studies over generator designs.

    python -m studies run --spec blocks_quick                 # local SQLite, 1 worker
    python -m studies run --spec blocks --workers 2 --n-trials 20
    python -m studies run --spec blocks --storage postgresql+psycopg://u:p@db:5432/optuna \\
        --tracking-uri http://mlflow-host:5000 --workers 4 --gpus 0,1,2,3
    python -m studies report --spec blocks
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STORAGE_HELP = (
    "Optuna storage URL (default: $EFFGAN_STUDY_STORAGE, else sqlite:///studies/optuna.db); "
    "postgresql+psycopg://USER:PASSWORD@HOST:PORT/DB to scale out; journal:PATH for a journal "
    "file (no heartbeat)"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m studies", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, tracking: bool = True) -> None:
        p.add_argument("--spec", required=True, help="a spec name under studies/ or a .toml path")
        p.add_argument("--storage", default=None, help=STORAGE_HELP)
        if tracking:
            p.add_argument(
                "--tracking-uri",
                default=None,
                help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else mlruns/mlflow.db)",
            )
            p.add_argument(
                "--run-root",
                type=Path,
                default=None,
                help="folder for the trials' checkpoints (default: the harness's mlruns/runs)",
            )

    run = sub.add_parser("run", help="create the study once, then run W workers on it")
    common(run)
    run.add_argument("--n-trials", type=int, default=None, help="total trial budget (all workers)")
    run.add_argument("--workers", type=int, default=1, help="worker processes on this machine")
    run.add_argument("--gpus", default=None, help="e.g. 0,1: worker i gets GPU i mod len")
    run.add_argument("--log-dir", type=Path, default=None, help="worker logs (default: studies/)")
    run.add_argument("--report", action="store_true", help="write the report when done")

    worker = sub.add_parser("worker", help="one worker (started by `run`; the study must exist)")
    common(worker)
    worker.add_argument("--n-trials", type=int, default=None)
    worker.add_argument("--index", type=int, default=0)

    create = sub.add_parser("create", help="only create the study (and the MLflow experiment)")
    common(create)

    report = sub.add_parser("report", help="write studies/<name>.md and its plots")
    common(report, tracking=False)
    report.add_argument("--out", type=Path, default=None, help="folder (default: studies/)")

    show = sub.add_parser("show", help="print the study's trials")
    common(show, tracking=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "n_trials", None) is not None and args.n_trials < 1:
        print("error: --n-trials must be >= 1", file=sys.stderr)
        return 2
    if getattr(args, "workers", 1) < 1:
        print("error: --workers must be >= 1", file=sys.stderr)
        return 2
    # Imported here so `--help` is instant (these pull in TensorFlow via the registry).
    from bench.tracker import StoreError
    from studies.run import STORAGE_ENV
    from studies.spec import SpecError, load_spec
    from studies.storage import StorageError

    storage = args.storage or os.environ.get(STORAGE_ENV)
    try:
        spec = load_spec(args.spec)
        if args.command == "report":
            from studies.report import write_report

            path = write_report(spec, storage, out_dir=args.out)
            print(f"wrote {path}")
            return 0
        if args.command == "show":
            from studies.report import show

            show(spec, storage)
            return 0
        from studies import run as runner
        from studies.tracking import default_tracking_uri

        tracking_uri = args.tracking_uri or default_tracking_uri()
        if args.command == "create":
            runner.prepare(spec, runner.normalize_url(storage), tracking_uri)
            print(f"study {spec.name!r} ready in {runner.redact(runner.normalize_url(storage))}")
            return 0
        n_trials = args.n_trials or spec.n_trials
        if args.command == "worker":
            return runner.work(
                spec, storage, tracking_uri, n_trials, worker=args.index, run_root=args.run_root
            )
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
        code = runner.run_study(
            spec,
            storage,
            tracking_uri,
            n_trials,
            args.workers,
            args.log_dir,
            gpus,
            run_root=args.run_root,
        )
        if args.report and code == 0:
            from studies.report import write_report

            print(f"wrote {write_report(spec, storage)}")
        return code
    except (SpecError, StorageError, StoreError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, SpecError) else 3


if __name__ == "__main__":
    sys.exit(main())
