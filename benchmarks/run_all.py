"""Run every benchmark in turn (``make bench``); each prints ``RESULT name = value (goal ...)`` lines."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHES = ["bench_fit", "bench_loader", "bench_flops", "bench_time_to_accuracy", "bench_deform", "bench_grid_workers"]
# time-to-accuracy twice: a short schedule for the time to 92.4%, a longer one for the 10-minute accuracy
ARGS = {"bench_time_to_accuracy": [["--epochs", "4"], ["--epochs", "8"]]}

if __name__ == "__main__":
    names = sys.argv[1:] or BENCHES
    status = 0
    for name in names:
        for args in ARGS.get(name, [[]]):
            print(f"== {name} {' '.join(args)}", flush=True)
            status |= subprocess.call([sys.executable, "-m", f"benchmarks.{name}", *args], cwd=ROOT)
    sys.exit(status)
