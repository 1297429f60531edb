#!/usr/bin/env python
"""Run the benchmark suite: ``tests/benchmarks/run.py [--quick] [--only NAME,...]``.

Each benchmark runs in its own Python process (a clean first use of the moment engine,
memory figures not inflated by earlier benchmarks) and writes ``results/<name>.json`` and
its PNG plots; ``report.py`` then renders ``results/summary.md`` from all result files (and,
with ``--update-readme``, the README's benchmark section).
"""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: makes `benchmarks` and `helpers` importable
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")

from benchmarks import BENCHMARKS  # noqa: E402

DEFAULT_OUT = HERE / "results"


def run_one(name: str, preset: str, out_dir: Path) -> dict:
    """Run benchmark ``name`` with ``preset`` in this process; returns its result document."""
    module = importlib.import_module(f"benchmarks.bench_{name}")
    return module.run(module.PRESETS[preset], out_dir, preset)


def parse_names(text: str | None) -> list[str]:
    if not text:
        return list(BENCHMARKS)
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"run.py: unknown benchmark(s) {unknown}; valid: {', '.join(BENCHMARKS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the quick preset (about 10 min on 2 cores)")
    parser.add_argument("--preset", choices=("tiny", "quick", "full"), help="overrides --quick")
    parser.add_argument("--only", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--in-process", action="store_true",
                        help="run the benchmarks in this process instead of one process each")
    parser.add_argument("--update-readme", action="store_true",
                        help="rewrite the README's benchmark section from the results")
    args = parser.parse_args(argv)
    preset = args.preset or ("quick" if args.quick else "full")
    names = parse_names(args.only)
    failed = []
    for name in names:
        if args.in_process or len(names) == 1:
            start = time.perf_counter()
            print(f"[bench] {name} ({preset}) ...", flush=True)
            run_one(name, preset, args.out)
            print(f"[bench] {name}: ok in {time.perf_counter() - start:.1f} s", flush=True)
            continue
        code = subprocess.call([sys.executable, __file__, "--preset", preset, "--only", name,
                                "--out", str(args.out)])
        if code:
            print(f"[bench] {name}: FAILED (exit {code})", flush=True)
            failed.append(name)
    if len(names) > 1 or args.update_readme:
        from benchmarks import report

        report.main(["--results", str(args.out), "-o", str(args.out / "summary.md")])
        if args.update_readme:
            report.main(["--results", str(args.out), "--update-readme"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
