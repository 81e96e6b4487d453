# Sourced by the Hardening scripts. compile_core DIR compiles every C file of
# the core (CSources/CBatchNorm) into DIR, all at once (each element type's
# microkernels are a file of their own so that they compile side by side),
# with the flags of the array core_flags, or for the microkernels
# (microkernels/) those of microkernel_flags where the caller sets it; and
# sets core_objects to the objects. Fails if any compile fails.
compile_core() {
    local dir=$1
    mkdir -p "$dir"
    local pids=() source object status=0
    core_objects=()
    for source in $(find CSources/CBatchNorm -name '*.c' | sort); do
        object="$dir/$(echo "${source#CSources/CBatchNorm/}" | tr / -).o"
        core_objects+=("$object")
        local flags=("${core_flags[@]}")
        if [[ $source == */microkernels/* && -n ${microkernel_flags+set} ]]; then flags=("${microkernel_flags[@]}"); fi
        clang -c "${flags[@]}" -I CSources/CBatchNorm/include -I CSources/CBatchNorm "$source" -o "$object" &
        pids+=($!)
    done
    for pid in "${pids[@]}"; do wait "$pid" || status=1; done
    return $status
}
