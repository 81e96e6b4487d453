#!/bin/sh
# Builds the oneDNN anchor with --next-read (after each execution, inside the
# timed region, its OpenMP team reads the output as the next layer would:
# the loop of bench-threads' --next-layer read), for
# `compare_anchors.py --next-read --onednn OUT`.
#
#   Benchmarks/anchors/build-next-read.sh [OUT]   (default /tmp/anchors-next-read/onednn_bn_bench)
#
# The anchor's source is ../shared/anchors/onednn_bn_bench.cpp, patched with
# onednn-next-read.patch beside this script. Needs libdnnl-dev, g++ and patch.
set -e
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-/tmp/anchors-next-read/onednn_bn_bench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$here/../../../shared/anchors/onednn_bn_bench.cpp" "$work/"
patch -s -d "$work" -p1 < "$here/onednn-next-read.patch"
mkdir -p "$(dirname "$out")"
# -march=native for the read loop only (oneDNN's kernels are generated at run time).
g++ -O2 -march=native -std=c++17 -fopenmp "$work/onednn_bn_bench.cpp" -ldnnl -o "$out"
echo "built $out"
