#!/usr/bin/env python3
"""Run bench-threads, then PyTorch's CPU batch norm (and oneDNN's, if given)
on the same shapes and thread counts, right after, and print the time
ratios side by side. Never part of the build or of CI.

    python3 Benchmarks/compare_anchors.py --python /path/to/venv/bin/python \\
        [--onednn ../shared/anchors/build/onednn_bn_bench] [--threads 2] [--shapes resnet50]

--python must be an interpreter with torch installed (a venv outside the
package: python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch).
--onednn is the anchors' onednn_bn_bench binary (../shared/anchors/build.sh
builds it after apt-get install libdnnl-dev); it runs in both NCHW and NHWC.
Ratios above 1 mean ours is faster. The machine is shared: compare ratios
from one run, not absolute times across runs.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODES = ["forward-training", "forward-inference", "backward"]
ONEDNN_MODE = {"forward-training": "fwd_training", "forward-inference": "fwd_inference", "backward": "bwd"}

# Runs inside the torch interpreter: one JSON line per (shape, mode).
TORCH_PROGRAM = r"""
import json, statistics, sys, time, torch
import torch.nn.functional as F
threads, repeat, shapes = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
torch.set_num_threads(threads)
def median(fn):
    for _ in range(2): fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3
for shape in shapes:
    x = torch.randn(*shape)
    c = shape[1]
    w, b = torch.ones(c), torch.zeros(c)
    rm, rv = torch.zeros(c), torch.ones(c)
    dims = [0] + list(range(2, len(shape)))
    with torch.no_grad():
        train = median(lambda: F.batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5))
        infer = median(lambda: F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5))
        dy = torch.randn_like(x)
        mean = x.mean(dim=dims)
        invstd = 1 / torch.sqrt(x.var(dim=dims, unbiased=False) + 1e-5)
        back = median(lambda: torch.ops.aten.native_batch_norm_backward(
            dy, x, w, rm, rv, mean, invstd, True, 1e-5, [True, True, True]))
    for mode, ms in (("forward-training", train), ("forward-inference", infer), ("backward", back)):
        print(json.dumps({"shape": "x".join(map(str, shape)), "mode": mode, "median_ms": ms}), flush=True)
"""


def run_bench(args, json_path):
    command = [str(ROOT / ".build" / "release" / "bench-threads"), "--executors", "openmp,dispatch",
               "--threads", args.threads, "--shapes", args.shapes, "--repeat", str(args.repeat),
               "--json", json_path]
    subprocess.run(["swift", "build", "-c", "release", "--product", "bench-threads"], cwd=ROOT, check=True)
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return json.load(open(json_path))


def run_torch(args, threads, shapes):
    out = subprocess.run([args.python, "-c", TORCH_PROGRAM, str(threads), str(args.repeat), json.dumps(shapes)],
                         check=True, capture_output=True, text=True).stdout
    return {(r["shape"], r["mode"]): r["median_ms"] for r in map(json.loads, out.splitlines())}


def run_onednn(args, threads, shape, mode, layout):
    if len(shape) != 4 and len(shape) != 2:
        return None
    n, c, h, w = (shape + [1, 1])[:4]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = subprocess.run([args.onednn, str(n), str(c), str(h), str(w), ONEDNN_MODE[mode], str(args.repeat), layout],
                         check=True, capture_output=True, text=True, env=env).stdout
    for line in out.splitlines():
        if line.startswith("RESULT"):
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            return float(fields["median_ms"])
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="a Python interpreter with torch installed")
    parser.add_argument("--onednn", help="the anchors' onednn_bn_bench binary (optional)")
    parser.add_argument("--threads", default="2", help="comma-separated thread counts (default 2)")
    parser.add_argument("--shapes", default="default", help="as bench-threads --shapes")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ours = run_bench(args, os.path.join(tmp, "bench.json"))
    figures = ours["figures"]
    shapes = []
    for f in figures:
        dims = [int(d) for d in f["shape"].split("x")]
        if dims not in shapes:
            shapes.append(dims)
    bandwidth = ", ".join("%dT copy %.1f GB/s" % (b["threads"], b["copy"]) for b in ours["bandwidth"])
    print(f"microkernels {ours['microkernels']}, OpenMP {'on' if ours['openmp'] else 'off'}; bandwidth {bandwidth}")
    print("ratios are other time / our OpenMP time: above 1, ours is faster\n")
    header = "| shape | mode | threads | ours ms | ours GB/s | PyTorch ms | ×PyTorch | Dispatch/OpenMP |"
    if args.onednn:
        header += " oneDNN NCHW ms | ×oneDNN NCHW | oneDNN NHWC ms | ×oneDNN NHWC |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for threads in [int(t) for t in args.threads.split(",")]:
        torch_ms = run_torch(args, threads, shapes)
        for f in figures:
            if f["executor"] != "openmp" or f["threads"] != threads:
                continue
            dims = [int(d) for d in f["shape"].split("x")]
            dispatch = next((g for g in figures if g["executor"] == "dispatch" and g["threads"] == threads
                             and g["shape"] == f["shape"] and g["mode"] == f["mode"]), None)
            t = torch_ms[(f["shape"], f["mode"])]
            ratio = f"{dispatch['median_ms'] / f['median_ms']:.2f}" if dispatch else "–"
            row = (f"| {f['shape']} | {f['mode']} | {threads} | {f['median_ms']:.2f} | {f['gbps']:.1f} | "
                   f"{t:.2f} | {t / f['median_ms']:.2f} | {ratio} |")
            if args.onednn:
                for layout in ("nchw", "nhwc"):
                    d = run_onednn(args, threads, dims, f["mode"], layout)
                    row += f" {d:.2f} | {d / f['median_ms']:.2f} |" if d else " – | – |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
