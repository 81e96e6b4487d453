#!/usr/bin/env bash
# Synchronized batch norm across real processes: builds the mpi-tests program
# and runs it under `mpirun -np 2, 3, 4, 5 and 8` (powers of two and not;
# oversubscribed on a small machine). Exits non-zero on any failure. Without Open MPI it says so
# and exits 0 having run nothing: the package builds and tests without it.
#
# Arguments go to `swift build`, e.g. under AddressSanitizer:
#   Scripts/mpi-tests.sh --sanitize=address --scratch-path .build-asan
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v mpirun >/dev/null 2>&1 || ! ls /usr/include/*-linux-gnu/mpi/mpi.h >/dev/null 2>&1; then
    echo "mpi-tests: Open MPI is not installed (apt-get install libopenmpi-dev openmpi-bin): no multi-process test run"
    exit 0
fi

swift build --product mpi-tests "$@"
binary="$(swift build --show-bin-path "$@")/mpi-tests"
# Open MPI keeps allocations until exit that LeakSanitizer would report.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1}"

# Open MPI refuses to run as root unless told to, and in containers its
# shared-memory transport cannot use cross-memory attach: copy instead.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_btl_vader_single_copy_mechanism=none
# More ranks than cores: ranks waiting in a collective must yield their core
# to the ranks still computing, or every exchange costs a scheduler tick.
export OMPI_MCA_mpi_yield_when_idle=1
for ranks in 2 3 4 5 8; do
    echo "mpi-tests: mpirun -np $ranks"
    # A hang would be a bug: give up after 5 minutes.
    timeout 300 mpirun --oversubscribe -np "$ranks" "$binary"
done
echo "mpi-tests: passed at 2, 3, 4, 5 and 8 ranks"
