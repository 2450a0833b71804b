"""`python -m bench run|list|report|overhead`: the benchmark harness's command line.

Exit status: 0 when every run finished (or was already finished), 1 when a run failed
(the report still lists it), 2 for a spec or store problem found before any training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", default="quick", help="spec name under bench/specs/ or a .toml path")
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlruns/mlflow.db)",
    )
    p.add_argument(
        "--out", type=Path, default=None, help="run folders (default <repo>/mlruns/runs)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every not-yet-finished run of a spec, then report")
    _common(run)
    run.add_argument(
        "--only", nargs="+", metavar="NAME", help="only these labels, generators or keys"
    )
    run.add_argument("--force", action="store_true", help="retrain finished runs (as new runs)")
    run.add_argument(
        "--parallel",
        type=int,
        default=None,
        help="children at once (default: one per visible GPU, 1 on CPU)",
    )
    run.add_argument(
        "--report",
        type=Path,
        default=None,
        help="REPORT.md path (default: REPORT.md for quick, report/<spec>/REPORT.md otherwise)",
    )
    run.add_argument("--no-report", action="store_true", help="do not write the report")
    ls = sub.add_parser("list", help="the spec's expanded runs, their keys and status")
    _common(ls)
    rep = sub.add_parser("report", help="write REPORT.md from the store")
    _common(rep)
    rep.add_argument("--report", type=Path, default=None, help="REPORT.md path")
    ov = sub.add_parser("overhead", help="harness overhead per epoch vs the bare trainer")
    _common(ov)
    ov.add_argument("--generator", default="resnet")
    ov.add_argument("--epochs", type=int, default=6)
    ov.add_argument("--steps", type=int, default=None, help="steps per epoch (default: the spec's)")
    ov.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bench import runner, tracker
    from bench.spec import SpecError

    try:
        if args.command == "run":
            report = False if args.no_report else (args.report or True)
            results = runner.run_benchmark(
                args.spec, args.tracking_uri, args.only, args.force, args.parallel, args.out, report
            )
            return 1 if any(r.status != "FINISHED" for r in results) else 0
        if args.command == "list":
            for p in runner.list_runs(args.spec, args.tracking_uri, args.out):
                r = p.run
                print(f"{r.key}  {p.status:9s} {p.action:7s} seed {r.config.seed}  {r.label}"
                      f"{'  ' + p.note if p.note else ''}")  # fmt: skip
            return 0
        if args.command == "report":
            from bench.spec import load_spec

            name = load_spec(args.spec).name
            path = args.report or runner.default_report_path(name)
            runner.write_report(runner.resolve_uri(args.tracking_uri), name, path)
            return 0
        if args.command == "overhead":
            figures = runner.measure_overhead(
                args.spec, args.generator, args.epochs, args.steps, args.tracking_uri, args.out
            )
            if args.json:
                args.json.write_text(json.dumps(figures, indent=2))
            return 0
    except (SpecError, tracker.StoreError, runner.BusyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
