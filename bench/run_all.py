"""Run every benchmark in bench/ and print one table of their figures with the goal beside each
(the goals: report/speed.py).

    python bench/run_all.py [--only train_step,evaluate]

Each script prints one JSON object as its last line; this collects them, writes them to
bench/results.json and prints the table. The last line printed is one JSON object too.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from harness.arguments import OneLineParser
from report.speed import GOALS, verdict

HERE = Path(__file__).resolve().parent
SCRIPTS = ("train_step", "grid_overhead", "evaluate", "adm", "calibration_inception", "local_jobs")


def main() -> None:
    parser = OneLineParser(prog="sdft bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SCRIPTS), metavar="NAME[,NAME...]",
                        help=f"these benchmarks only, of: {', '.join(SCRIPTS)}")
    args = parser.parse_args()
    unknown = [name for name in args.only.split(",") if name not in SCRIPTS]
    if unknown:
        parser.error(f"--only: no benchmark {unknown[0]!r} (they are: {', '.join(SCRIPTS)})")
    from tabulate import tabulate

    figures: dict[str, dict] = {}
    for name in args.only.split(","):
        start = time.time()
        proc = subprocess.run([sys.executable, str(HERE / f"{name}.py")], capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed ({proc.returncode})\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        figures[name] = json.loads(lines[-1])
        print(f"{name}: {time.time() - start:.0f} s", file=sys.stderr)
    rows = []
    for script, values in figures.items():
        for key, value in values.items():
            goal = GOALS.get(key)
            rows.append((script, key, value, f"{goal[0]} {goal[1]}" if goal else "", verdict(key, value, values)))
    print(tabulate(rows, headers=("bench", "figure", "value", "goal", ""), tablefmt="github"))
    # --only refreshes some figures: keep the others from the last full run
    saved = HERE / "results.json"
    merged = {**(json.loads(saved.read_text()) if saved.is_file() else {}), **figures}
    saved.write_text(json.dumps(merged, indent=2) + "\n")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
