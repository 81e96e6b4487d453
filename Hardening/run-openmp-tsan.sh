#!/usr/bin/env bash
# ThreadSanitizer on the OpenMP executor. libomp is not instrumented, so LLVM's
# Archer tool (libarcher.so, shipped in Debian's libomp-dev) tells TSan about
# OpenMP's fork, join and barriers; the core's own atomics are instrumented.
# Builds openmp_driver.c with the C core and runs it with 3 OpenMP threads.
set -euo pipefail
cd "$(dirname "$0")/.."
llvm=""
for dir in $(ls -d /usr/lib/llvm-*/lib 2>/dev/null | sort -t- -k2 -n -r); do
    if [ -f "$dir/libomp.so" ] && [ -f "$dir/libarcher.so" ]; then llvm=$dir; break; fi
done
[ -n "$llvm" ] || { echo "libomp-dev with libarcher.so not found"; exit 1; }
swift_lib=$(dirname "$(readlink -f "$(command -v swift)")")/../lib/swift/linux   # libdispatch for TSan's runtime
source Hardening/compile-core.sh
# Line tables, as in run-fuzzer.sh: reports keep files, lines and inlined frames.
core_flags=(-gline-tables-only -O1 -fsanitize=thread -fopenmp)
compile_core .build-fuzz/core-tsan
clang -gline-tables-only -O1 -fsanitize=thread -fopenmp -I CSources/CBatchNorm/include -I CSources/CBatchNorm \
    "${core_objects[@]}" Hardening/openmp_driver.c \
    -L"$llvm" -Wl,-rpath,"$llvm" -lomp -L"$swift_lib" -Wl,-rpath,"$swift_lib" -ldispatch -lBlocksRuntime -lm \
    -o .build-fuzz/openmp_driver_tsan
OMP_TOOL_LIBRARIES="$llvm/libarcher.so" TSAN_OPTIONS="halt_on_error=1 ignore_noninstrumented_modules=1" \
    .build-fuzz/openmp_driver_tsan
