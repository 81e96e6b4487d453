internal import CBatchNorm
import Dispatch
import Foundation

/// `true` when the C core was compiled with OpenMP (the package trait
/// `OpenMP` is on, `BATCHNORM_OPENMP` was not `0` at build time, and libomp
/// was found). When `false`, `.automatic` runs on Dispatch and `.openMP`
/// throws `executorUnavailable`.
public var isOpenMPAvailable: Bool { cbn_openmp_available() != 0 }

/// The instruction set the C microkernels were dispatched to on this CPU,
/// e.g. `"x86-64-v4 (AVX-512)"`, and whether bfloat16 narrows with AVX-512
/// BF16 (bitwise the same results). Chosen once at load time; results are
/// deterministic on one machine but may differ in the last bits between
/// instruction sets (fused multiply-add).
public var microkernelInstructionSet: String { String(cString: cbn_isa_name()) }

/// The last-level cache of this machine as the kernels see it: the largest
/// cache the first CPU reports (sysfs), or 32 MiB where none is reported.
/// Calls whose tensors fill half of it or more ask for their float inputs ahead.
public var lastLevelCacheBytes: Int { Int(cbn_last_level_cache_bytes()) }

/// Who runs the work items of a call. Every executor runs the same C item
/// functions over the same plan and gives bitwise identical results; they
/// differ only in the threads they use.
public enum BatchNormExecutor: Hashable, Sendable, CustomStringConvertible {
    /// An OpenMP parallel region of at most `threads` threads, set per call
    /// (`num_threads`); no process-wide OpenMP setting is changed.
    case openMP(threads: Int)
    /// The calling thread and up to `threads - 1` helpers on a Dispatch queue
    /// of the package's own; the call returns when the work is done, without
    /// waiting for helpers that have not woken yet. Helpers linger for up to
    /// 20 ms after a call, waiting for the next, as OpenMP's threads do.
    case dispatch(threads: Int)
    /// The calling thread alone.
    case serial

    /// OpenMP when compiled in, Dispatch otherwise, with ``defaultThreadCount`` threads.
    public static var automatic: BatchNormExecutor {
        let threads = defaultThreadCount
        return isOpenMPAvailable ? .openMP(threads: threads) : .dispatch(threads: threads)
    }

    /// The thread count of ``automatic``, for the whole process (as PyTorch's
    /// `torch.get_num_threads`). In order of precedence:
    /// 1. the count given to ``setDefaultThreadCount(_:)``;
    /// 2. `OMP_NUM_THREADS`, when it is a positive integer (the first entry of a list);
    /// 3. the CPUs this process may run on: its affinity mask, which `taskset`,
    ///    `numactl` and `mpirun --bind-to` set, so that ranks sharing a machine
    ///    do not each start a team the size of the machine;
    /// 4. `ProcessInfo.activeProcessorCount`.
    ///
    /// The environment and the mask are read once, at first use.
    public static var defaultThreadCount: Int {
        defaultThreads.withLock { $0 } ?? environmentThreadCount
    }

    /// Sets ``defaultThreadCount`` for the whole process (as PyTorch's
    /// `torch.set_num_threads`); nil goes back to the environment's count.
    /// Executors already made keep their own count. Throws
    /// `invalidThreadCount` for a count below 1.
    ///
    /// - Parameter threads: The count, at least 1; nil for the environment's.
    public static func setDefaultThreadCount(_ threads: Int?) throws(BatchNormError) {
        if let threads, threads < 1 {
            throw BatchNormError(.invalidThreadCount, argument: "threads", expected: "at least 1 thread, or nil",
                                 actual: "\(threads)")
        }
        defaultThreads.withLock { $0 = threads }
    }

    /// The number of threads the executor may use.
    public var threads: Int {
        switch self {
        case .openMP(let threads), .dispatch(let threads): threads
        case .serial: 1
        }
    }

    /// The name as the benchmark and error messages print it.
    public var description: String {
        switch self {
        case .openMP(let threads): "openmp(\(threads))"
        case .dispatch(let threads): "dispatch(\(threads))"
        case .serial: "serial"
        }
    }

    /// Throws unless the executor can run here.
    func validate() throws(BatchNormError) {
        if threads < 1 {
            throw BatchNormError(.invalidThreadCount, argument: "executor", expected: "at least 1 thread",
                                 actual: "\(threads) in \(self)")
        }
        if case .openMP = self, !isOpenMPAvailable {
            throw BatchNormError(.executorUnavailable, argument: "executor",
                                 expected: "an executor compiled into this build (dispatch or serial)",
                                 actual: "\(self), but OpenMP is not compiled in")
        }
    }

    /// Runs every phase of `job`; throws `outOfMemory`, having written
    /// nothing, if the workers' scratch space cannot be allocated.
    func run(_ job: OpaquePointer) throws(BatchNormError) {
        switch self {
        case .serial:
            try Check.status(cbn_job_run(job, cbn_parallel_serial, nil, 1))
        case .openMP(let threads):
            try Check.status(cbn_job_run(job, cbn_parallel_openmp, nil, Int64(threads)))
        case .dispatch(let threads):
            try Check.status(cbn_job_run(job, dispatchParallel, nil, Int64(threads)))
        }
    }
}

/// The count set by `setDefaultThreadCount`, if any.
private let defaultThreads = Locked<Int?>(nil)

/// `OMP_NUM_THREADS`, else the affinity mask's CPUs, else the active processors.
private let environmentThreadCount: Int = {
    if let value = ProcessInfo.processInfo.environment["OMP_NUM_THREADS"],
       let first = value.split(separator: ",").first.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) }),
       first >= 1 {
        return first
    }
    let allowed = Int(cbn_affinity_cpu_count())
    return allowed >= 1 ? allowed : max(1, ProcessInfo.processInfo.activeProcessorCount)
}()

/// The Dispatch executor. The calling thread works through items at once;
/// `workers - 1` helpers join it: helpers of earlier calls, which linger for
/// a while after each job (`cbn_helper_run`), and new ones on `helperQueue`
/// for the rest (`cbn_helpers_offer` says how many). It returns when every
/// item is done (`cbn_job_wait`), not when every helper has woken: a Dispatch
/// thread can take a millisecond to start after an idle spell. Each helper
/// holds a reference to the job, so a late one finds a finished job, takes no
/// item, and lets it go.
private let dispatchParallel: cbn_parallel_fn = { _, work, job, workers in
    nonisolated(unsafe) let job = job!
    let work = work!
    for _ in 0..<cbn_helpers_offer(job, work, workers - 1) {
        cbn_job_retain(job)
        helperQueue.async { cbn_helper_run(job, work) }
    }
    work(job)
    cbn_job_wait(job)
}

/// The helpers' queue: a concurrent queue of its own, so that a lingering
/// helper holds one of its threads, never one of the global queue's, which
/// other code in the process shares.
private let helperQueue = DispatchQueue(label: "BatchNorm.helpers", attributes: .concurrent)

/// Test hooks. Not API: only the package's tests and benchmarks call them.
@_spi(Testing) public enum BatchNormFaultInjection {
    /// On the calling thread, the job created `after` job creations from now
    /// (0: the next one) fails as if out of memory; nil injects nothing.
    ///
    /// - Parameter after: The number of job creations to let through first.
    public static func failJobCreation(after: Int?) {
        cbn_test_fail_job_creation(Int64(after ?? -1))
    }

    /// The most Dispatch helpers that have been alive at once in this
    /// process (lingering ones included); never more than 64.
    public static var mostDispatchHelpersAlive: Int { Int(cbn_test_most_helpers_alive()) }

    /// A deliberate fault in the results, for the tests that prove the suite catches it.
    public enum Mutant: Sendable {
        /// The first value of y (or dx) is a NaN.
        case nanInOutput
        /// The lowest bit of the last value of y, dx and dz is flipped.
        case flippedLowBit
        /// Every channel's batch mean is off by 1e-3 (σ + |mean|), in y and in the saved and running statistics.
        case wrongMean
    }

    /// Every call made on the calling thread from now on computes with
    /// `mutant`; nil for none.
    ///
    /// - Parameter mutant: The fault, or nil.
    public static func mutate(_ mutant: Mutant?) {
        let core: cbn_test_mutant = switch mutant {
        case nil: CBN_MUTANT_NONE
        case .nanInOutput: CBN_MUTANT_NAN_OUTPUT
        case .flippedLowBit: CBN_MUTANT_FLIP_LOW_BIT
        case .wrongMean: CBN_MUTANT_WRONG_MEAN
        }
        cbn_test_mutate_jobs(core)
    }

    /// Every call made on the calling thread from now on writes outputs of
    /// `bytes` or more with non-temporal stores (0: every output), so that
    /// small tensors reach that path; nil restores the kernels' own rule
    /// (outputs of calls whose tensors outgrow the last-level cache).
    ///
    /// - Parameter bytes: The smallest output, in bytes, to stream; or nil.
    public static func streamOutputs(from bytes: Int?) {
        cbn_test_stream_outputs_from(Int64(bytes ?? -1))
    }

    /// Every call made on the calling thread from now on, with `every` true,
    /// has each fused item's second pass ask for the x of the item its worker
    /// takes next, so that small tensors reach that path; nil (or false)
    /// restores the kernels' own rule (float calls whose inputs outgrow the
    /// last-level cache).
    ///
    /// - Parameter every: Whether every fused item asks; nil for the rule.
    public static func prefetchNextItems(_ every: Bool?) {
        cbn_test_prefetch_next_items(every == true ? 1 : -1)
    }
}
