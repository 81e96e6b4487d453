#!/usr/bin/env bash
# Compares two builds of bench-threads on this noisy machine: runs them
# interleaved A B B A A B B A (so that drift and order affect both alike) and
# prints, per shape, layout, cache state and mode, the median time of each
# and A/B (above 1, B is faster).
#
#   Benchmarks/ab-compare.sh OLD/bench-threads NEW/bench-threads 32x2048x7x7,32x1024x14x14 \
#       forward-training,backward [threads] [layouts] [caches] [dtypes] [apis]
#
# apis (default raw): the public paths to time, as bench-threads' --api; each
# figure is one path's (raw buffers, arrays, layer, ...), never a mix.
#
# An A/A run of this script showed about 5 % order bias and ±10 % noise here:
# read an A/B between 0.87 and 1.15 as "no clear difference".
set -euo pipefail
a=$1; b=$2; shapes=$3; modes=$4; threads=${5:-2}
layouts=${6:-channels-first,channels-last}; caches=${7:-warm}; dtypes=${8:-float}; apis=${9:-raw}
out=$(mktemp -d)
i=0
for v in A B B A A B B A; do
    i=$((i + 1))
    bin=$a; [ "$v" = B ] && bin=$b
    "$bin" --shapes "$shapes" --modes "$modes" --executors openmp --threads "$threads" --repeat 9 \
        --layout "$layouts" --cache "$caches" --dtype "$dtypes" --api "$apis" --json "$out/$v$i.json" > /dev/null 2>&1
done
python3 - "$out" <<'PY'
import collections, glob, json, statistics, sys
ms = collections.defaultdict(list)
for path in glob.glob(sys.argv[1] + "/*.json"):
    build = path.rsplit("/", 1)[1][0]
    for f in json.load(open(path))["figures"]:
        mode = f["mode"] + ("" if f.get("api", "raw") == "raw" else " " + f["api"])
        ms[(f["shape"], f["dtype"], f["layout"], f["cache"], mode, build)].append(f["median_ms"])
for key in sorted({k[:5] for k in ms}):
    a = statistics.median(ms[key + ("A",)]); b = statistics.median(ms[key + ("B",)])
    print(f"{key[0]:>16} {key[1]:>8} {key[2]:>14} {key[3]:>4} {key[4]:>28}  A {a:7.3f} ms  B {b:7.3f} ms  A/B {a / b:5.2f}")
PY
rm -rf "$out"
