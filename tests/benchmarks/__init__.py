"""The autoinit-sym benchmark suite (run it with ``tests/benchmarks/run.py [--quick]``).

Each ``bench_*`` module measures one thing, writes ``results/<name>.json`` (and PNG plots)
and exposes ``PRESETS`` (``tiny``, ``quick``, ``full``) and ``run(settings, out_dir)``.
Every figure is a ratio or an error measured within one run, so the speed of a shared
machine shifts both sides of a ratio alike.
"""
BENCHMARKS = ("moments", "init_cost", "signal", "training", "keras_hub", "legacy", "large_variables", "cold_start")
