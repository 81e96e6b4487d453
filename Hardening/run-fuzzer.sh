#!/usr/bin/env bash
# Builds the libFuzzer target (with AddressSanitizer and UBSan, and OpenMP when
# libomp is installed) and fuzzes for the given number of seconds (default 60),
# starting from the committed seed corpus. New inputs go to .build-fuzz/corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}

omp_flags=()
for dir in $(ls -d /usr/lib/llvm-*/lib 2>/dev/null | sort -t- -k2 -n -r); do
    if [ -f "$dir/libomp.so" ]; then omp_flags=(-fopenmp "-L$dir" -lomp); break; fi
done

# The microkernels of the instruction set the loader would pick here, compiled
# alone: the other clones are never run by this process, and compiling three
# under the sanitizers takes twice as long.
isa_flags=(-DCBN_NO_MULTIVERSIONING)
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
if [[ $flags == *avx512f* && $flags == *avx512bw* && $flags == *avx512cd* && $flags == *avx512dq* && $flags == *avx512vl* ]]; then
    isa_flags+=(-march=x86-64-v4)
elif [[ $flags == *avx2* && $flags == *fma* && $flags == *bmi2* ]]; then
    isa_flags+=(-march=x86-64-v3)
fi

mkdir -p .build-fuzz/corpus
source Hardening/compile-core.sh
# Line tables rather than full debug information, as the package's own builds
# (Package.swift): reports keep files, lines and inlined frames, and the
# microkernels compile in about 60 % of the time.
fuzz=(-gline-tables-only -O1 -fsanitize=fuzzer,address -fno-sanitize-recover=undefined "${isa_flags[@]}" "${omp_flags[@]:0:1}")
# UBSan: every check on the plan, the job and the driver; on the microkernels
# the arithmetic ones (kernels_template.h leaves out the address checks,
# which ASan's cover there).
core_flags=("${fuzz[@]}" -fsanitize=undefined)
compile_core .build-fuzz/core
clang "${core_flags[@]}" -I CSources/CBatchNorm/include -I CSources/CBatchNorm \
    "${core_objects[@]}" Hardening/fuzz_batchnorm.c "${omp_flags[@]}" -lpthread -lm -o .build-fuzz/fuzz_batchnorm
echo "fuzzing for ${seconds}s (OpenMP: ${omp_flags[*]:-none}; microkernels: ${isa_flags[*]})"
.build-fuzz/fuzz_batchnorm -max_total_time="$seconds" -print_final_stats=1 -timeout=20 \
    .build-fuzz/corpus Hardening/fuzz-corpus
