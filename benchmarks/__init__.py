"""chainjit benchmark suite: workloads, per-system adapters, timing harness (see README.md)."""
