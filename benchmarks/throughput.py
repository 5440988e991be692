"""Throughput benchmark: the engine vs one-member-at-a-time JAX and PyTorch eager vs stacked PyTorch, eager
and under torch.compile (see sweepjax/bench.py).

    python benchmarks/throughput.py --workload lottery --small      # CPU-sized
    python benchmarks/throughput.py --workload lottery              # full size (GPU)

The stacked-PyTorch comparison on a 256-member width-64 lottery sweep (CPU-sized: 300 steps, batch 256):

    python benchmarks/throughput.py --workload lottery --small --set 'sweep.model.width=[64]' \\
        --set 'sweep.seed={range=[0,256]}'

Prints a markdown report; record it in benchmarks/RESULTS.md with the command, device and date.
"""
import sys

from sweepjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
