"""Run every benchmark in turn (``make bench``); each prints ``RESULT name = value (goal ...)`` lines."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ["bench_fit", "bench_loader", "bench_flops", "bench_time_to_accuracy"]

if __name__ == "__main__":
    names = sys.argv[1:] or BENCHES
    status = 0
    for name in names:
        print(f"== {name}", flush=True)
        status |= subprocess.call([sys.executable, "-m", f"benchmarks.{name}"], cwd=ROOT)
    sys.exit(status)
