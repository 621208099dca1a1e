/// Host copies between the mapped memory of two buffers, possibly of different devices: how
/// bytes cross from one logical device to another through host-visible memory.
extension Buffer {
    /// Copies `source` into `destination` (equal sizes) with the host, under both buffers'
    /// host-access locks (taken in a fixed order, so two opposite copies cannot deadlock).
    /// Both buffers must be host-visible; the caller orders the copy after the GPU work that
    /// wrote `source` and before the GPU work that reads `destination`.
    /// - Parameters:
    ///   - source: The bytes to copy; a host-visible buffer.
    ///   - destination: Where they go; a host-visible buffer, the same size as `source` (ranges
    ///     of one buffer may overlap).
    /// - Throws: ``VulkanError/invalidArgument(_:)`` for different sizes or a buffer that is not
    ///   mapped, ``VulkanError/rangeOutOfBounds(offset:bytes:bufferBytes:)`` for a range outside
    ///   its buffer.
    public static func hostCopy(from source: BufferSlice, to destination: BufferSlice) throws {
        guard source.byteCount == destination.byteCount else {
            throw VulkanError.invalidArgument("host copy of \(source.byteCount) bytes into a range of \(destination.byteCount) bytes")
        }
        try source.buffer.checkRange(offset: source.offset, bytes: source.byteCount)
        try destination.buffer.checkRange(offset: destination.offset, bytes: destination.byteCount)
        guard let from = source.buffer.mapped, let to = destination.buffer.mapped else {
            let which = source.buffer.mapped == nil ? source.buffer : destination.buffer
            throw VulkanError.invalidArgument("host copy needs host-visible memory; a buffer of \(which.device.label) is not mapped")
        }
        let bytes = source.byteCount
        let copy = { (to + destination.offset).copyMemory(from: from + source.offset, byteCount: bytes) }
        if source.buffer === destination.buffer {
            source.buffer.hostAccess.withLock { _ in
                // Overlapping ranges of one buffer: memmove semantics.
                (to + destination.offset).copyMemory(from: from + source.offset, byteCount: bytes)
            }
            return
        }
        let first = ObjectIdentifier(source.buffer) < ObjectIdentifier(destination.buffer) ? source.buffer : destination.buffer
        let second = first === source.buffer ? destination.buffer : source.buffer
        first.hostAccess.withLock { _ in second.hostAccess.withLock { _ in copy() } }
    }
}
