import CVulkan

/// Vulkan structs on the heap, linked through `pNext`, freed together. Used for the extensible
/// queries and create-infos (properties2, features2, memory budget) without nesting closures.
final class PNextChain {
    private var deallocators: [() -> Void] = []
    private(set) var first: UnsafeMutableRawPointer?
    private var last: UnsafeMutableRawPointer?
    private static let pNextOffset = MemoryLayout<VkBaseOutStructure>.offset(of: \VkBaseOutStructure.pNext) ?? 8

    /// Appends a copy of `value` (whose `sType` the caller has set) and returns its address.
    @discardableResult
    func append<T>(_ value: T) -> UnsafeMutablePointer<T> {
        let p = UnsafeMutablePointer<T>.allocate(capacity: 1)
        p.initialize(to: value)
        deallocators.append {
            p.deinitialize(count: 1)
            p.deallocate()
        }
        let raw = UnsafeMutableRawPointer(p)
        raw.storeBytes(of: nil, toByteOffset: Self.pNextOffset, as: UnsafeMutableRawPointer?.self)
        if let last {
            last.storeBytes(of: raw, toByteOffset: Self.pNextOffset, as: UnsafeMutableRawPointer?.self)
        } else {
            first = raw
        }
        last = raw
        return p
    }

    deinit { deallocators.forEach { $0() } }
}
