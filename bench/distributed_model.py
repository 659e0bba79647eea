"""A model (not a measurement) of data-parallel scaling on larger clusters, from the 1- and
2-process measurements of bench/distributed.py.

    python bench/distributed_model.py [--json docs/distributed_bench.json]
                                      [--plot docs/img/distributed_scaling.png]

Weak scaling: every process keeps the per-process batch b of the 2-process measurement, so a
step of p processes computes what one process computes with batch b (t_c: the measured
two-process step less its allreduce) and then allreduces the gradient (B bytes) around a ring:

    t_ar(p) = 2(p-1)/p · B / bandwidth + 2(p-1) · latency

Without overlap a step takes t_c + t_ar; with the bucketed allreduce started as the backward
pass produces the gradients, the part of t_ar that fits in the backward pass (2/3 of t_c, the
usual backward/forward ratio) is hidden: t_c + max(0, t_ar - 2/3 · t_c). The efficiency is
t_c / t(p) (the throughput of p processes over p times one process's). Networks: 10 and 25 Gb/s
Ethernet (TCP, latency 30 and 15 µs per message) and 100 Gb/s InfiniBand-class (2 µs).
Prints a Markdown table and draws the plot.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
NETWORKS = {"10 Gb/s": (10e9 / 8, 30e-6), "25 Gb/s": (25e9 / 8, 15e-6),
            "100 Gb/s": (100e9 / 8, 2e-6)}
BACKWARD_SHARE = 2 / 3
# "what if the step ran on a GPU": the same model with the compute 20x shorter (a guess for
# these small models on a current GPU, launch-bound) and NCCL on 100 Gb/s (GPUDirect RDMA, no
# host copies); labelled as such in the table
GPU_SPEEDUP = 20
PROCESSES = 2 ** np.arange(0, 9)  # 1 ... 256


def ring_allreduce(p, nbytes: float, bandwidth: float, latency: float):
    p = np.asarray(p, dtype=float)
    return 2 * (p - 1) / p * nbytes / bandwidth + 2 * (p - 1) * latency


def step_time(p, compute: float, nbytes: float, bandwidth: float, latency: float,
              overlap: bool):
    comm = ring_allreduce(p, nbytes, bandwidth, latency)
    if overlap:
        return compute + np.maximum(0.0, comm - BACKWARD_SHARE * compute)
    return compute + comm


def efficiency(p, compute, nbytes, bandwidth, latency, overlap):
    return compute / step_time(p, compute, nbytes, bandwidth, latency, overlap)


def load(path: Path) -> dict:
    """Per model: compute seconds per step at the 2-process batch, gradient bytes."""
    data = json.loads(path.read_text())
    two = data["two_processes_one_thread"]["models"]
    out = {}
    for name, m in two.items():
        compute = max(m["step_ms"] - m["allreduce_native_ms"], 1e-3) * 1e-3
        out[name] = {"compute": compute, "bytes": m["gradient_bytes"],
                     "batch": m["batch_per_process"]}
    return out


def table(models: dict) -> str:
    rows = ["| model (batch per process) | network | overlap | p=8 | p=32 | p=128 | p=256 |",
            "|---|---|---|---:|---:|---:|---:|"]
    for name, m in models.items():
        for net, (bw, lat) in NETWORKS.items():
            for overlap in (False, True):
                e = [efficiency(p, m["compute"], m["bytes"], bw, lat, overlap)
                     for p in (8, 32, 128, 256)]
                rows.append(f"| {name} ({m['batch']}) | {net} | {'yes' if overlap else 'no'} | "
                            + " | ".join(f"{v:.0%}" for v in e) + " |")
        bw, lat = NETWORKS["100 Gb/s"]
        for overlap in (False, True):
            e = [efficiency(p, m["compute"] / GPU_SPEEDUP, m["bytes"], bw, lat, overlap)
                 for p in (8, 32, 128, 256)]
            rows.append(f"| {name} ({m['batch']}), GPU-like: compute / {GPU_SPEEDUP} | "
                        f"100 Gb/s, NCCL-style | {'yes' if overlap else 'no'} | "
                        + " | ".join(f"{v:.0%}" for v in e) + " |")
    return "\n".join(rows)


def plot(models: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4), sharey=True)
    colors = dict(zip(NETWORKS, ("tab:red", "tab:orange", "tab:blue")))
    for ax, (name, m) in zip(np.atleast_1d(axes), models.items()):
        for net, (bw, lat) in NETWORKS.items():
            for overlap, style in ((False, "--"), (True, "-")):
                e = efficiency(PROCESSES, m["compute"], m["bytes"], bw, lat, overlap)
                ax.plot(PROCESSES, e, style, color=colors[net], marker="o", markersize=3,
                        label=f"{net}, {'overlap' if overlap else 'no overlap'}")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("processes p")
        ax.set_title(f"{name}: {m['bytes'] / 2**20:.2f} MiB gradient, "
                     f"t_c {m['compute'] * 1e3:.1f} ms (batch {m['batch']})", fontsize=9)
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("modelled scaling efficiency")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("MODEL, not a measurement: ring allreduce "
                 "2(p-1)/p·B/bw + 2(p-1)·latency, weak scaling", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", default=str(ROOT / "docs" / "distributed_bench.json"))
    p.add_argument("--plot", default=str(ROOT / "docs" / "img" / "distributed_scaling.png"))
    args = p.parse_args(argv)
    models = load(Path(args.json))
    print(table(models))
    print(f"plot: {plot(models, Path(args.plot))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
