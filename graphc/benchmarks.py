"""`graphc bench`: the benchmark workloads (the LLVM backend issue fills this in)."""

from __future__ import annotations


def main(args) -> int:
    print("benchmarks need the llvm backend; see bench/ in the repository")
    return 0
