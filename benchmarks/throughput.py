"""Throughput benchmark: engine vs one-member-at-a-time JAX vs PyTorch eager (see sweepjax/bench.py).

    python benchmarks/throughput.py --workload lottery --small      # CPU-sized
    python benchmarks/throughput.py --workload lottery              # full size (GPU)

Prints a markdown report; record it in benchmarks/RESULTS.md with the command, device and date.
"""
import sys

from sweepjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
