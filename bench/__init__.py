"""forrestq's benchmarks: ``python -m bench.compare`` (side by side against peers), ``bench/servers.py``."""
