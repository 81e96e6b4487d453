import Foundation

/// A value behind a lock, for the package's modules. It uses a POSIX mutex
/// (`NSLock`), whose ordering ThreadSanitizer knows, so the sanitizer checks
/// the code around it rather than reporting the lock's own accesses.
package final class Locked<Value: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    package init(_ value: Value) {
        self.value = value
    }

    /// Runs `body` on the value, holding the lock.
    package func withLock<R, E: Error>(_ body: (inout Value) throws(E) -> R) throws(E) -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}
