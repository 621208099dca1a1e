import VulkanCompute

// Zero-sized inputs (docs/ARCHITECTURE.md, "The API convention"): every op takes them, checks
// them like any other operand and records no kernel. Outputs that are not empty even so (the
// LSE of queries that see no keys, a final state after zero steps, the gradient of an operand
// that did not matter) are written by the transfer commands below, never by a dispatch.

/// The path an op reports when its inputs were empty and no kernel ran.
package let emptyInputPath = "empty (no kernel)"

extension Tensor {
    /// Records, with no kernel, a fill of every element with the 32-bit pattern `bits`
    /// (vkCmdFillBuffer), or with zero bytes for 16-bit types (`bits` must then be 0). A range
    /// that vkCmdFillBuffer cannot take (not 4-byte aligned) is copied from a host buffer holding
    /// the pattern instead (vkCmdCopyBuffer). An empty tensor records nothing.
    /// - Parameters:
    ///   - bits: The 32-bit pattern of each f32, i32 or u32 element; 0 for f16 and bf16.
    ///   - stream: The stream to record into.
    /// - Throws: The errors of `Stream.fill`, `Stream.copy` and `Device.makeBuffer`.
    package func recordFill(bits: UInt32, on stream: Stream) throws {
        guard !isEmpty else { return }
        if slice.offset % 4 == 0 && byteCount % 4 == 0 {
            try stream.fill(slice, word: bits)
            return
        }
        let words = [UInt32](repeating: bits, count: (byteCount + 3) / 4)
        let pattern = try device.makeBuffer(words, location: .host)
        try stream.copy(from: pattern.slice(offset: 0, byteCount: byteCount), to: slice)
    }

    /// Records a copy of `source` (same byte size) into this tensor with no kernel
    /// (vkCmdCopyBuffer); an empty tensor records nothing.
    /// - Parameters:
    ///   - source: The tensor to copy, as many bytes as this one.
    ///   - stream: The stream to record into.
    /// - Throws: The errors of `Stream.copy`.
    package func recordCopy(from source: Tensor, on stream: Stream) throws {
        try stream.copy(from: source.slice, to: slice)
    }
}
