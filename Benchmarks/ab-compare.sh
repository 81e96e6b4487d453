#!/usr/bin/env bash
# Compares two builds of bench-threads on this noisy machine: runs them
# interleaved A B B A A B B A (so that drift and order affect both alike) and
# prints, per shape and mode, the median % of the copy roof of each and B/A.
#
#   Benchmarks/ab-compare.sh OLD/bench-threads NEW/bench-threads 32x2048x7x7,32x1024x14x14 \
#       forward-training,backward [threads]
#
# An A/A run of this script showed about 5 % order bias and ±10 % noise here:
# read a B/A under 1.15 as "no clear difference".
set -euo pipefail
a=$1; b=$2; shapes=$3; modes=$4; threads=${5:-2}
out=$(mktemp -d)
i=0
for v in A B B A A B B A; do
    i=$((i + 1))
    bin=$a; [ "$v" = B ] && bin=$b
    "$bin" --shapes "$shapes" --modes "$modes" --executors openmp --threads "$threads" --repeat 9 \
        --json "$out/$v$i.json" > /dev/null 2>&1
done
python3 - "$out" <<'PY'
import collections, glob, json, statistics, sys
roof = collections.defaultdict(list)
for path in glob.glob(sys.argv[1] + "/*.json"):
    build = path.rsplit("/", 1)[1][0]
    for figure in json.load(open(path))["figures"]:
        roof[(figure["shape"], figure["mode"], build)].append(figure["roof_fraction"] * 100)
for shape, mode in sorted({(s, m) for s, m, _ in roof}):
    a = statistics.median(roof[(shape, mode, "A")]); b = statistics.median(roof[(shape, mode, "B")])
    print(f"{shape:>16} {mode:>18}  A {a:5.0f} %  B {b:5.0f} %  B/A {b / a:5.2f}")
PY
rm -rf "$out"
