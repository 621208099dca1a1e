import VulkanCompute

// Attention on zero-sized inputs: batch 0, no query heads, no queries or no keys. No kernel is
// recorded. Outputs follow the rule for a row that sees no key (O = 0, LSE = -inf), so the only
// outputs that are not empty, those of queries when there are no keys at all, are written by
// fills (vkCmdFillBuffer); gradients of operands that did not matter are zero-filled likewise.
// The head dimension is not a size but a kernel parameter: it must still be a supported one.

extension AttentionGeometry {
    /// True when no kernel has anything to compute: no sequences, no query heads, no query
    /// rows, or no keys in any sequence.
    package var isEmpty: Bool { batch == 0 || headsQ == 0 || totalQ == 0 || totalK == 0 }

    /// The forward (or decode) of an empty problem: O = 0 and LSE = -inf for every query row
    /// (each of them saw no key), by fills; nothing when there are no query rows. With sinks a
    /// row's LSE is its head's sink logit instead, copied from a host-made table.
    /// - Parameters:
    ///   - o: O, checked by the caller.
    ///   - lse: LSE, checked by the caller.
    ///   - sinks: The sink logits per query head, if any.
    ///   - stream: The stream to record into.
    /// - Throws: The errors of the fills.
    package func recordEmptyForward(o: Tensor, lse: Tensor, sinks: [Float]?, on stream: Stream) throws {
        try o.recordFill(bits: 0, on: stream)
        guard let sinks, !lse.isEmpty else {
            try lse.recordFill(bits: (-Float.infinity).bitPattern, on: stream)
            return
        }
        var table = [Float](repeating: 0, count: lse.elementCount)
        for b in 0..<batch {
            for i in 0..<sequence(b).sq { for h in 0..<headsQ { table[lseOffset(b: b, i: i, h: h)] = sinks[h] } }
        }
        let staged = try lse.device.makeBuffer(table, location: .host)
        try stream.copy(from: staged.slice(offset: 0, byteCount: lse.byteCount), to: lse.slice)
    }
}

extension FlashAttention {
    /// The backward of an empty problem: every gradient is zero (each non-empty one a fill).
    /// - Parameters:
    ///   - grads: dQ, dK, dV, checked by the caller.
    ///   - stream: The stream to record into.
    /// - Returns: The gradients, with the empty path.
    /// - Throws: The errors of the fills.
    func recordEmptyBackward(_ grads: AttentionGradients, dsinks: Tensor?, on stream: Stream) throws -> AttentionGradients {
        for t in [grads.dq, grads.dk, grads.dv] + (dsinks.map { [$0] } ?? []) { try t.recordFill(bits: 0, on: stream) }
        return AttentionGradients(dq: grads.dq, dk: grads.dk, dv: grads.dv, dsinks: dsinks, path: emptyInputPath)
    }
}
