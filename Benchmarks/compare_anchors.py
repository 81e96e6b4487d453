#!/usr/bin/env python3
"""Time bench-threads, PyTorch's CPU batch norm and oneDNN's on the same
shapes, layouts, cache states and thread count, interleaved shape by shape,
and print the ratios (their time / ours: above 1, ours is faster) as median
and spread over --runs whole comparisons. Never part of the build or of CI.

    python3 Benchmarks/compare_anchors.py --python /path/to/venv/bin/python \\
        [--onednn /path/to/onednn_bn_bench] [--threads 2] [--shapes default] \\
        [--layouts channels-first,channels-last] [--caches warm,cold] [--runs 3]

--python: an interpreter with torch installed (a venv outside the package:
python3 -m venv /tmp/venv-torch && /tmp/venv-torch/bin/pip install torch numpy).
PyTorch runs ../shared/anchors/torch_kernel_bench.py, which times each kernel
allocating its output (F.batch_norm) and writing into preallocated tensors
(native_batch_norm.out); the faster of the two is PyTorch's figure.
--onednn: the anchors' onednn_bn_bench (apt-get install libdnnl-dev, then
../shared/anchors/build.sh); channels-first figures are set against oneDNN in
both layouts, channels-last figures against its NHWC kernel.
--dtype float16 or bfloat16: the half formats (our Float parameters; PyTorch's
mixed kernels with float weight and bias, at their best in whichever of NCHW
and channels_last is faster, each of our layouts set against that; oneDNN's
bf16 kernel in both its layouts, for bfloat16 only: the anchor has no f16).
--activations relu,add-relu: the fused epilogues instead of plain batch norm,
set against the same work done separately (our batch norm, then a separate
vectorized pass: bench-threads' relu-separate) and, for relu, oneDNN's
fuse_norm_relu (--relu); PyTorch does not fuse, and is not run then.
--apis arrays,layer,autodiff: what a Swift user calls against what a PyTorch
user calls: our public paths (bench-threads --api; raw buffers too) in
forward training and a training step (forward-backward) set against
nn.BatchNorm2d in training (torch_kernel_bench.py --module: its forward, and
forward + backward through autograd).
--next-read: each timed call is followed, inside the timed region, by the
next layer's read of its output on the same threads (bench-threads
--next-layer read; oneDNN --next-read, which the stock anchor lacks: build it
with Benchmarks/anchors/build-next-read.sh and pass that binary as --onednn),
and our calls run twice, with the kernels' own stores and with every output
streamed, as oneDNN streams its float outputs ("streamed": that time / ours).
PyTorch, whose kernels write with ordinary stores as ours do, is not run then.
Cold figures evict the caches before each call, outside the timed region,
in all three programs (bench-threads --cache cold, torch --cold MB, oneDNN
--flush MB). The machine is shared: read ratios, not absolute times.
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODES = ["forward-training", "forward-inference", "backward"]
TORCH_DTYPE = {"float": "float32", "float16": "float16", "bfloat16": "bfloat16"}
ONEDNN_MODE = {"forward-training": "fwd_training", "forward-inference": "fwd_inference", "backward": "bwd"}
SHAPE_SETS = {
    "resnet50": ["32x64x112x112", "32x256x56x56", "32x512x28x28", "32x1024x14x14", "32x2048x7x7"],
    "small": ["8x64x28x28", "16x1x64x64", "256x512"],
}
SHAPE_SETS["default"] = SHAPE_SETS["resnet50"] + ["256x1x64x64", "1024x4096"]


def bench_threads(args, shape, flush_mb, apis="raw", modes=",".join(MODES), executors="openmp,dispatch"):
    """Our figures for one shape: {(layout, cache, mode, executor, activation, api, stores): ms}."""
    extra = ["--next-layer", "read", "--stores", "rule,streamed"] if args.next_read else []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "bench.json")
        subprocess.run([str(ROOT / ".build" / "release" / "bench-threads"), "--executors", executors,
                        "--threads", str(args.threads), "--shapes", shape, "--layout", args.layouts,
                        "--cache", args.caches, "--flush-mb", str(flush_mb), "--repeat", str(args.repeat),
                        "--activation", bench_activations(args), "--dtype", args.dtype, "--api", apis,
                        "--modes", modes, "--json", path] + extra,
                       cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        figures = json.load(open(path))["figures"]
    return {(f["layout"], f["cache"], f["mode"], f["executor"], f["activation"], f["api"], f["stores"]):
            f["median_ms"] for f in figures}


def bench_activations(args):
    """none, or each fused epilogue asked for and its separate counterpart."""
    if args.activations == "none":
        return "none"
    return ",".join(a + suffix for a in args.activations.split(",") for suffix in ("", "-separate"))


def torch_figures(args, shape, layout, cache, flush_mb, module=False):
    """PyTorch at its best (the faster of allocating and preallocated outputs): {mode: ms};
    with `module`, nn.BatchNorm2d's forward and autograd step instead: {mode: ms}."""
    command = [args.python, str(args.torch_bench), str(args.threads), str(args.repeat), shape,
               "--dtype", TORCH_DTYPE[args.dtype]]
    if layout == "channels-last":
        command.append("--channels-last")
    if cache == "cold":
        command += ["--cold", str(flush_mb)]
    if module:
        command.append("--module")
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    best = {}
    for record in map(json.loads, out.splitlines()):
        if (record["how"] == "module") == module:
            best[record["mode"]] = min(best.get(record["mode"], float("inf")), record["median_ms"])
    return best


def onednn_figure(args, shape, mode, layout, cache, flush_mb, relu=False):
    dims = [int(d) for d in shape.split("x")]
    if len(dims) not in (2, 4):
        return None
    n, c, h, w = (dims + [1, 1])[:4]
    command = [args.onednn, str(n), str(c), str(h), str(w), ONEDNN_MODE[mode], str(args.repeat), layout]
    if cache == "cold":
        command += ["--flush", str(flush_mb)]
    if relu:
        command.append("--relu")
    if args.dtype == "bfloat16":
        command += ["--dtype", "bf16"]
    if args.next_read:
        command.append("--next-read")
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        # oneDNN builds no primitive for some configurations on some processors
        # (bf16 batch norm needs AVX-512): that figure is left out, "–" in the table.
        if "could not create a primitive" in result.stderr:
            print(f"    oneDNN has no {layout} {args.dtype} {mode} primitive here: left out", file=sys.stderr)
            return None
        raise subprocess.CalledProcessError(result.returncode, command, result.stdout, result.stderr)
    for line in result.stdout.splitlines():
        if line.startswith("RESULT"):
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            return float(fields["median_ms"])
    return None


def one_run(args, shapes, flush_mb):
    """Every figure of one whole comparison, shape by shape: {(shape, layout, cache, mode, who): ms}.
    With epilogues, the mode is e.g. "backward relu" and who is ours, separate or oneDNN."""
    times = {}
    for shape in shapes:
        dims = [int(d) for d in shape.split("x")]
        same_memory = len(dims) == 2 or dims[1] == 1
        print(f"  {shape}", file=sys.stderr, flush=True)
        ours = bench_threads(args, shape, flush_mb)
        for (layout, cache, mode, executor, activation, _, stores), ms in ours.items():
            if stores == "streamed":
                if executor == "openmp" and activation == "none":
                    times[(shape, layout, cache, mode, "streamed")] = ms
            elif activation == "none":
                times[(shape, layout, cache, mode, executor)] = ms
            elif activation.endswith("-separate"):
                if executor == "openmp":
                    times[(shape, layout, cache, f"{mode} {activation[:-9]}", "separate")] = ms
            else:
                times[(shape, layout, cache, f"{mode} {activation}", executor)] = ms
        if args.activations != "none":
            if args.onednn and "relu" in args.activations.split(","):
                for layout in args.layouts.split(","):
                    if layout == "channels-last" and same_memory and "channels-first" in args.layouts:
                        continue
                    for cache in args.caches.split(","):
                        for peer in (["nchw", "nhwc"] if layout == "channels-first" else ["nhwc"]):
                            for mode in MODES:
                                ms = onednn_figure(args, shape, mode, peer, cache, flush_mb, relu=True)
                                if ms is not None:
                                    times[(shape, layout, cache, f"{mode} relu", f"onednn-{peer}")] = ms
            continue
        for layout in args.layouts.split(","):
            if layout == "channels-last" and same_memory and "channels-first" in args.layouts:
                continue
            for cache in args.caches.split(","):
                torch_layouts = [layout]
                if args.dtype != "float" and not same_memory:
                    torch_layouts = ["channels-first", "channels-last"]   # the half formats: PyTorch's faster layout
                for torch_layout in torch_layouts if not args.next_read else []:
                    for mode, ms in torch_figures(args, shape, torch_layout, cache, flush_mb).items():
                        key = (shape, layout, cache, mode, "pytorch")
                        times[key] = min(times.get(key, float("inf")), ms)
                if args.onednn and args.dtype in ("float", "bfloat16"):
                    peers = ["nchw", "nhwc"] if layout == "channels-first" or args.dtype != "float" else ["nhwc"]
                    for peer in peers:
                        for mode in MODES:
                            ms = onednn_figure(args, shape, mode, peer, cache, flush_mb)
                            if ms is not None:
                                times[(shape, layout, cache, mode, f"onednn-{peer}")] = ms
    return times


def one_module_run(args, shapes, flush_mb):
    """Our public paths and PyTorch's module, shape by shape: {(shape, layout, cache, mode, who): ms},
    who being an api of ours or "pytorch-module"."""
    times = {}
    for shape in shapes:
        dims = [int(d) for d in shape.split("x")]
        same_memory = len(dims) == 2 or dims[1] == 1
        print(f"  {shape}", file=sys.stderr, flush=True)
        ours = bench_threads(args, shape, flush_mb, apis="raw," + args.apis,
                             modes="forward-training,forward-backward", executors="openmp")
        for (layout, cache, mode, executor, activation, api, _), ms in ours.items():
            times[(shape, layout, cache, mode, api)] = ms
        for layout in args.layouts.split(","):
            if layout == "channels-last" and same_memory and "channels-first" in args.layouts:
                continue
            for cache in args.caches.split(","):
                for mode, ms in torch_figures(args, shape, layout, cache, flush_mb, module=True).items():
                    times[(shape, layout, cache, mode, "pytorch-module")] = ms
    return times


def print_module_table(args, shapes, runs):
    apis = ["raw"] + args.apis.split(",")
    print(f"{args.dtype}, {args.threads} threads, {args.runs} runs, {args.repeat} timed calls per figure; "
          "ratios are PyTorch's nn.BatchNorm2d (training; forward-backward through autograd) time / ours, "
          "median (min–max) over the runs: above 1, ours is faster.\n")
    print("| shape | layout | cache | mode | PyTorch module ms | " + " | ".join(f"{a} ms | × {a}" for a in apis) + " |")
    print("|" + " --- |" * (5 + 2 * len(apis)))
    keys = sorted({k[:4] for r in runs for k in r if k[4] == "pytorch-module"},
                  key=lambda k: (shapes.index(k[0]), k[1], k[2] == "cold", k[3]))
    for shape, layout, cache, mode in keys:
        torch_ms = [r[(shape, layout, cache, mode, "pytorch-module")] for r in runs]
        row = f"| {shape} | {layout} | {cache} | {mode} | {spread(torch_ms)} |"
        for api in apis:
            key = (shape, layout, cache, mode, api)
            ours = [r[key] for r in runs if key in r]
            ratios = [r[(shape, layout, cache, mode, "pytorch-module")] / r[key] for r in runs if key in r]
            row += f" {spread(ours)} | {spread(ratios)} |" if ours else " – | – |"
        print(row, flush=True)


def spread(values):
    values = sorted(values)
    return f"{statistics.median(values):.2f} ({values[0]:.2f}–{values[-1]:.2f})"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", required=True, help="a Python interpreter with torch installed")
    parser.add_argument("--onednn", help="the anchors' onednn_bn_bench binary (optional)")
    parser.add_argument("--torch-bench", default=str(ROOT.parent / "shared" / "anchors" / "torch_kernel_bench.py"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--shapes", default="default", help="a set (default, resnet50, small) or NxCxHxW,...")
    parser.add_argument("--layouts", default="channels-first,channels-last")
    parser.add_argument("--caches", default="warm,cold")
    parser.add_argument("--repeat", type=int, default=7, help="timed calls per figure")
    parser.add_argument("--runs", type=int, default=3, help="whole comparisons; ratios are their median")
    parser.add_argument("--flush-mb", type=int, default=64, help="MiB written before each cold call")
    parser.add_argument("--activations", default="none", help="none, or fused epilogues: relu,add-relu")
    parser.add_argument("--dtype", default="float", choices=sorted(TORCH_DTYPE),
                        help="element type of the tensors (the half formats with float parameters)")
    parser.add_argument("--apis", help="our public paths against PyTorch's module: e.g. arrays,layer,autodiff")
    parser.add_argument("--next-read", action="store_true",
                        help="time each call with the next layer's read of its output (oneDNN: a --next-read build)")
    args = parser.parse_args()
    if args.next_read and (args.apis or args.activations != "none"):
        parser.error("--next-read times plain batch norm on the raw buffers: not with --apis or --activations")

    shapes = []
    for item in args.shapes.split(","):
        shapes += SHAPE_SETS.get(item, [item])
    subprocess.run(["swift", "build", "-c", "release", "--product", "bench-threads"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    runs = []
    for run in range(args.runs):
        print(f"run {run + 1} of {args.runs}", file=sys.stderr, flush=True)
        runs.append(one_module_run(args, shapes, args.flush_mb) if args.apis else one_run(args, shapes, args.flush_mb))
    if args.apis:
        print_module_table(args, shapes, runs)
        return

    peers = ["streamed"] if args.next_read else ["pytorch"] if args.activations == "none" else ["separate"]
    peers += ["onednn-nchw", "onednn-nhwc"] if args.onednn else []
    print(f"{args.dtype}, {args.threads} threads, {args.runs} runs, {args.repeat} timed calls per figure; "
          f"ratios are their time / our OpenMP time, median (min–max) over the runs: above 1, ours is faster. "
          + ("Each time includes the next layer's read of the output; streamed: ours with every output "
             "written with non-temporal stores.\n" if args.next_read else
             "PyTorch is the faster of F.batch_norm and native_batch_norm.out.\n" if args.activations == "none" else
             "separate: our batch norm, then a separate vectorized pass; oneDNN: fuse_norm_relu.\n"))
    header = "| shape | layout | cache | mode | ours ms | " + " | ".join(f"× {p}" for p in peers) + " | Dispatch / OpenMP |"
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    def mode_order(mode):
        base, _, activation = mode.partition(" ")
        return MODES.index(base), activation
    keys = sorted({k[:4] for k in runs[0] if k[3].partition(" ")[0] in MODES}, key=lambda k: (shapes.index(k[0]), k[1], k[2] == "cold", mode_order(k[3])))
    for shape, layout, cache, mode in keys:
        ours = [r[(shape, layout, cache, mode, "openmp")] for r in runs if (shape, layout, cache, mode, "openmp") in r]
        if not ours:
            continue
        row = f"| {shape} | {layout} | {cache} | {mode} | {spread(ours)} |"
        for peer in peers:
            ratios = [r[(shape, layout, cache, mode, peer)] / r[(shape, layout, cache, mode, "openmp")]
                      for r in runs if (shape, layout, cache, mode, peer) in r]
            row += f" {spread(ratios)} |" if ratios else " – |"
        dispatch = [r[(shape, layout, cache, mode, "dispatch")] / r[(shape, layout, cache, mode, "openmp")]
                    for r in runs if (shape, layout, cache, mode, "dispatch") in r]
        row += f" {spread(dispatch)} |" if dispatch else " – |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
