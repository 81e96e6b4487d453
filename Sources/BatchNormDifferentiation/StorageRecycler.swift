import BatchNormKernels

/// The storage of the tensors a differentiable layer last returned (its
/// output, and its pullback's input and residual gradients), handed back to
/// the next call that needs a tensor of the same count once no array but the
/// slot's shares it: once the caller has let go of what it was given. A
/// training step then writes into the storage of the step before instead of
/// into new memory, whose page faults can cost more than the kernels.
///
/// Whether the caller still holds an array is what copy-on-write asks: a
/// Swift array is a single reference to its storage object, and the slot
/// keeps that object and asks `isKnownUniquelyReferenced` of it. That an
/// array is such a reference is checked once, at run time
/// (``arrayIsOneStorageReference``); where it is not, nothing is recycled.
///
/// The cost: each slot holds one tensor between calls. An array the layer
/// returned and that you mutate in place before its next call is copied
/// first, as any array that shares its storage is.
final class StorageRecycler<Scalar: Sendable>: Sendable {
    enum Slot: Int, CaseIterable {
        case output, inputGradient, residualGradient
    }

    /// An array's storage object. It may cross threads: it holds an array of
    /// `Sendable` scalars, and is reached only under the lock.
    private struct Storage: @unchecked Sendable {
        var object: ArrayStorageObject
    }

    /// The storage of the last array of each slot.
    private let slots = Locked<[Storage?]>(Array(repeating: nil, count: Slot.allCases.count))

    /// The slot's array, emptied from the slot, if it holds `count` elements
    /// and nothing else shares its storage; otherwise an empty array (and the
    /// slot lets its array go).
    func take(_ slot: Slot, count: Int) -> [Scalar] {
        guard arrayIsOneStorageReference else { return [] }
        return slots.withLock { slots -> [Scalar] in
            // Asked of the slot's own reference, with no copy of it in between.
            guard slots[slot.rawValue] != nil, isKnownUniquelyReferenced(&slots[slot.rawValue]!.object) else {
                slots[slot.rawValue] = nil
                return []
            }
            let array = unsafeBitCast(slots[slot.rawValue]!.object, to: [Scalar].self)
            slots[slot.rawValue] = nil
            return array.count == count ? array : []
        }
    }

    /// Keeps `array`'s storage in the slot, in place of what it held.
    func keep(_ slot: Slot, _ array: [Scalar]) {
        guard arrayIsOneStorageReference, !array.isEmpty else { return }
        let storage = Storage(object: unsafeBitCast(array, to: ArrayStorageObject.self))
        slots.withLock { $0[slot.rawValue] = storage }
    }
}

/// The static type the recycler gives an array's storage object: a class of
/// its own, so that `isKnownUniquelyReferenced` asks of the reference itself
/// (an `AnyObject` would be opened into a copy first). Only the object's
/// reference count is ever used, never a member: its real class is the
/// array's storage class, which the runtime keeps using to free it.
final class ArrayStorageObject {}

/// Whether a Swift array is one reference to its storage object, so that
/// the object, cast from an array, tells by `isKnownUniquelyReferenced`
/// whether another array shares it, and casts back to the same array. Tried
/// once on an array of this process.
let arrayIsOneStorageReference: Bool = {
    guard MemoryLayout<[Int]>.size == MemoryLayout<ArrayStorageObject>.size,
          MemoryLayout<[Int]>.alignment == MemoryLayout<ArrayStorageObject>.alignment else { return false }
    let count = Int.random(in: 16...32)   // an array made at run time, never a static constant
    var storage = storageOfNewArray(count: count)
    guard isKnownUniquelyReferenced(&storage) else { return false }
    let array = unsafeBitCast(storage, to: [Int].self)
    let seenShared = !isKnownUniquelyReferenced(&storage)
    return seenShared && array == Array(0..<count)
}()

/// The storage object of a new array `[0, 1, …, count − 1]`, of which the
/// array, gone with this call, kept no reference.
@inline(never)
private func storageOfNewArray(count: Int) -> ArrayStorageObject {
    unsafeBitCast(Array(0..<count), to: ArrayStorageObject.self)
}
