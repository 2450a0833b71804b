"""EffGAN Bench's harness: specs in, one child process per run, MLflow out, REPORT.md.

Data flows one way: spec (bench.spec) -> runner (bench.runner) -> worker (bench.worker,
which trains with effgan) -> tracker (bench.tracker, MLflow) -> report (bench.report).
"""
