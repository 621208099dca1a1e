import VkAttn
/// `ContextParallelRecurrence` for every rank of an in-process group at once: every rank's
/// tensors are checked (and the ranks against each other: batch, channels, dtype) before any
/// rank starts, so a bad configuration is a typed error that leaves the group usable.
extension ContextParallelRecurrence {
    /// Every rank's forward, concurrently; arrays indexed by rank (`h0` belongs to the first
    /// rank: rank 0, reversed: the last).
    /// - Parameters:
    ///   - a: Each rank's decays, in rank order.
    ///   - b: Each rank's inputs.
    ///   - h0: The global initial state, on the first rank's device; nil means zeros.
    ///   - h: Each rank's states (written).
    ///   - finalState: Each rank's outgoing state (written); nil skips them.
    ///   - incoming: Each rank's incoming state (written); nil skips them.
    ///   - communicators: One per rank, in rank order.
    /// - Returns: Each rank's output, in rank order.
    /// - Throws: `VkAttnError` for any rank's tensors, or ranks that disagree on batch or
    ///   channels, before any rank starts; afterwards the first rank's failure.
    public func forward<C: Communicator>(a: [Tensor], b: [Tensor], h0: Tensor? = nil, h: [Tensor], finalState: [Tensor]? = nil,
                                         incoming: [Tensor]? = nil, communicators: [C]) async throws -> [RecurrenceShardOutput] {
        try precheck(communicators, [a, b, h] + [finalState, incoming].compactMap { $0 })
        let shards = try communicators.indices.map { r in
            try checkForward(rank: r, size: communicators.count, device: communicators[r].device, a: a[r], b: b[r],
                             h0: r == firstRank(communicators.count) ? h0 : nil, h: h[r], finalState: finalState?[r],
                             incoming: incoming?[r])
        }
        try agree(shards)
        let first = firstRank(communicators.count)
        return try await onEveryRank(communicators) { comm in
            let r = comm.rank
            return try await self.forward(a: a[r], b: b[r], h0: r == first ? h0 : nil, h: h[r], finalState: finalState?[r],
                                          incoming: incoming?[r], communicator: comm)
        }
    }

    /// Every rank's backward, concurrently; arrays indexed by rank (`dFinal` belongs to the
    /// rank of the last steps; `incoming` as the forward wrote it, every rank's).
    /// - Parameters:
    ///   - a: Each rank's decays, in rank order.
    ///   - h: Each rank's states from the forward.
    ///   - incoming: Each rank's incoming state from the forward.
    ///   - dh: Each rank's state gradients.
    ///   - dFinal: The final state's gradient, on the last steps' rank's device; nil means zeros.
    ///   - da: Each rank's decay gradients (written).
    ///   - db: Each rank's input gradients (written).
    ///   - dIncoming: Each rank's incoming-state gradients (written); nil skips them.
    ///   - communicators: One per rank, in rank order.
    /// - Returns: Each rank's output, in rank order.
    /// - Throws: As ``forward(a:b:h0:h:finalState:incoming:communicators:)``.
    public func backward<C: Communicator>(a: [Tensor], h: [Tensor], incoming: [Tensor]? = nil, dh: [Tensor], dFinal: Tensor? = nil,
                                          da: [Tensor], db: [Tensor], dIncoming: [Tensor]? = nil,
                                          communicators: [C]) async throws -> [RecurrenceShardOutput] {
        try precheck(communicators, [a, h, dh, da, db] + [incoming, dIncoming].compactMap { $0 })
        let last = communicators.count - 1 - firstRank(communicators.count)
        let shards = try communicators.indices.map { r in
            try checkBackward(rank: r, size: communicators.count, device: communicators[r].device, a: a[r], h: h[r],
                              incoming: incoming?[r], dh: dh[r], dFinal: r == last ? dFinal : nil, da: da[r], db: db[r],
                              dIncoming: dIncoming?[r])
        }
        try agree(shards)
        return try await onEveryRank(communicators) { comm in
            let r = comm.rank
            return try await self.backward(a: a[r], h: h[r], incoming: incoming?[r], dh: dh[r], dFinal: r == last ? dFinal : nil,
                                           da: da[r], db: db[r], dIncoming: dIncoming?[r], communicator: comm)
        }
    }

    func precheck<C: Communicator>(_ communicators: [C], _ lists: [[Tensor]]) throws {
        guard !communicators.isEmpty, communicators.enumerated().allSatisfy({ $0.offset == $0.element.rank }) else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "communicators", reason: "must be one per rank, in rank order")
        }
        for list in lists where list.count != communicators.count {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "tensors", reason: "\(list.count) tensors for \(communicators.count) ranks")
        }
    }

    /// The ranks hold the same channels (only the lengths differ).
    func agree(_ shards: [Shard]) throws {
        for (r, s) in shards.enumerated() where s.batch != shards[0].batch || s.channels != shards[0].channels {
            throw VkAttnError.shapeMismatch(op: Self.opName, operand: "a of rank \(r)", expected: "batch \(shards[0].batch), channels \(shards[0].channels) (as rank 0)",
                                            actual: "batch \(s.batch), channels \(s.channels)")
        }
    }
}
