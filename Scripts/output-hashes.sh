#!/usr/bin/env bash
# Hashes the outputs of a fixed sweep of calls (Tools/output-hashes) with each
# set of microkernels this machine can run: the instruction-set clones the
# loader picks here (AVX-512 on x86-64-v4), the AVX2 clone alone and the
# baseline x86-64 clone alone, and compares them with the hashes recorded in
# Benchmarks/results/output-hashes/. A change that must leave every result as
# it was (a reorganization of the core) passes; `--record` writes the files
# anew, for a change that means to change results (say so in its commit).
# About a minute per build once built, three release builds the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
record=0
[ "${1:-}" = "--record" ] && record=1
results=Benchmarks/results/output-hashes
mkdir -p "$results"

# name, scratch path, extra build flags; the AVX2 build only where the CPU has AVX2.
builds=("native .build -")
grep -q avx2 /proc/cpuinfo && builds+=("x86-64-v3 .build-hashes-v3 -Xcc -DCBN_NO_MULTIVERSIONING -Xcc -march=x86-64-v3")
builds+=("x86-64 .build-hashes-baseline -Xcc -DCBN_NO_MULTIVERSIONING")

status=0
for build in "${builds[@]}"; do
    read -r name scratch flags <<<"$build"
    [ "$flags" = "-" ] && flags=""
    # shellcheck disable=SC2086
    swift build -c release --product output-hashes --scratch-path "$scratch" $flags >/dev/null
    out=$(mktemp)
    "$scratch/release/output-hashes" >"$out"
    isa=$(head -1 "$out" | sed 's/^# output hashes, microkernels: //')
    if grep -q "EXECUTORS DIFFER" "$out"; then
        echo "output-hashes ($name): executors give different bits:"; grep "EXECUTORS DIFFER" "$out" | head
        status=1
    fi
    # The native build names the clone the loader picked; the others are compiled for their target.
    # x86-64-v4.txt is the native build's (on an AVX-512 machine). Below AVX-512 the native build
    # is not compared: the code outside the clones (the finalize) is baseline there, and in the
    # x86-64-v3 and x86-64 builds, which check those clones, it is compiled for their target, whose
    # fused multiply-adds round differently.
    case "$name:$isa" in
        native:x86-64-v4*) key=x86-64-v4 ;;
        native:*)
            echo "output-hashes (native, $isa): executors checked; not compared with a file (below AVX-512, the $isa build checks this clone)"
            rm -f "$out"
            continue ;;
        *) key=$name ;;
    esac
    file="$results/$key.txt"
    if [ $record = 1 ]; then
        tail -n +2 "$out" >"$file"
        echo "output-hashes ($name, $isa): recorded $(wc -l <"$file") lines in $file"
    elif [ ! -f "$file" ]; then
        echo "output-hashes ($name, $isa): nothing recorded in $file"; status=1
    elif diff <(tail -n +2 "$out") "$file" >/dev/null; then
        echo "output-hashes ($name, $isa): every output bit for bit as recorded ($(wc -l <"$file") lines)"
    else
        echo "output-hashes ($name, $isa): outputs differ from $file:"
        diff <(tail -n +2 "$out") "$file" | head -20 || true    # diff exits 1 here: go on to the next build
        status=1
    fi
    rm -f "$out"
done
exit $status
