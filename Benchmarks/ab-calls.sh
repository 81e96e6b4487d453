#!/usr/bin/env bash
# Compares two revisions of the C core call by call: builds each revision's
# CSources/CBatchNorm as a shared library (the flags of SwiftPM's release
# build), and runs ab-calls/ab_calls.c, which loads both and alternates them
# call by call (A B B A ...) in one process. It prints, per figure, each
# build's median time and the median of the per-pair ratios A/B (above 1, B
# is faster) with their quartiles.
#
#   Benchmarks/ab-calls.sh OLD NEW 32x256x56x56,32x2048x7x7 forward-training,backward \
#       [layouts] [caches] [dtypes] [pairs] [threads] [offset] [activation]
#
# A mode may be a pair, MODE_A/MODE_B, run by A and B: with OLD = NEW,
#   Benchmarks/ab-calls.sh HEAD HEAD 32x256x56x56 forward-training/forward-inference
# gives what forward training costs over inference, call by call.
#
# OLD and NEW are git revisions, "." for the working tree, or directories
# that hold a CSources/CBatchNorm (another worktree, say). Defaults: both
# layouts, warm, float, 24 pairs, 2 threads, tensors on 4 KiB boundaries.
# `offset` places each tensor that many bytes past one instead (a multiple
# of 8): a large Swift array's elements lie 48 bytes past one, and
# bench-threads' raw buffers 16, which changes how channels-last rows fall
# on cache lines. OFFSET_A/OFFSET_B places A's and B's apart: with OLD = NEW,
#   Benchmarks/ab-calls.sh HEAD HEAD 32x2048x7x7 forward-inference channels-last warm float 24 2 48/0
# gives what a Swift array's placement costs, call by call. `activation`
# (none, relu or add-relu) fuses that epilogue into every call, as
# bench-threads --activation does. Needs clang
# and, for threads, libomp-dev.
#
# Where ab-compare.sh (whole bench-threads runs, interleaved) sees about
# ±10 % between runs of the same build on a shared machine, neighbouring
# calls share the moment's load: an A/A run of this script (HEAD against
# HEAD, 56x56 and 7x7 forward training and backward) gave medians of
# 1.00-1.03, their quartiles within ±1 % at 56x56 and ±9 % on the 7x7 jobs
# of under a millisecond. It times the raw C jobs alone (no Swift API);
# ab-compare.sh remains the tool for the public paths.
set -euo pipefail
old=$1; new=$2; shapes=$3; modes=$4
layouts=${5:-channels-first,channels-last}; caches=${6:-warm}; dtypes=${7:-float}; pairs=${8:-24}; threads=${9:-2}
offset=${10:-0}; activation=${11:-none}
root=$(git -C "$(dirname "$0")" rev-parse --show-toplevel)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The newest LLVM's libomp, as Package.swift looks for it.
openmp=()
for dir in $(ls -d /usr/lib/llvm-*/lib 2>/dev/null | sort -V -r) /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
    if [ -e "$dir/libomp.so" ]; then openmp=(-fopenmp -L"$dir" -Wl,-rpath,"$dir"); break; fi
done
[ ${#openmp[@]} -gt 0 ] || echo "ab-calls.sh: no libomp found; every job runs on one thread" >&2

# build REVISION NAME: $work/NAME.so from that revision's core, compiled by
# the Hardening scripts' compile_core.
build() {
    local source=$work/$2-source from=$1
    mkdir -p "$source"
    [ "$from" = . ] && from=$root
    if [ -d "$from/CSources/CBatchNorm" ]; then
        cp -r "$from/CSources" "$source/"
    else
        git -C "$root" archive "$from" CSources/CBatchNorm | tar -x -C "$source"
    fi
    (
        cd "$source"
        source "$root/Hardening/compile-core.sh"
        core_flags=(-O2 -fPIC -fno-omit-frame-pointer "${openmp[@]:0:1}")
        compile_core "$work/$2-objects"
        clang -shared -Wl,-Bsymbolic "${core_objects[@]}" "${openmp[@]}" -lm -lpthread -o "$work/$2.so"
    )
}
build "$old" A &
build_a=$!
build "$new" B
wait $build_a
clang -O2 -I "$root/CSources/CBatchNorm/include" "$root/Benchmarks/ab-calls/ab_calls.c" -ldl -o "$work/ab_calls"

for shape in ${shapes//,/ }; do
    for layout in ${layouts//,/ }; do
        for mode in ${modes//,/ }; do
            for dtype in ${dtypes//,/ }; do
                for cache in ${caches//,/ }; do
                    "$work/ab_calls" "$work/A.so" "$work/B.so" "$shape" "$layout" "$mode" "$dtype" "$pairs" "$threads" "$cache" "$offset" "$activation"
                done
            done
        done
    done
done
