import VkAttn

extension ContextParallelAttention {
    /// Bytes one rank sends per call by the formulas of the schemes' papers, for a
    /// configuration that `validate` accepts: N = `plan.ranks`, T = S / N tokens per rank (the
    /// even split the papers assume; uneven splits make T a fraction), b bytes per element of
    /// `shape.dtype`, fp32 LSE and gradient partials.
    ///
    /// - `.ring` (Liu et al.): N - 1 steps of one K and one V block, 2 T Hkv D b each; the
    ///   backward adds N fp32 dK/dV blocks, 2 T Hkv D 4 each, over N steps. Counted exactly
    ///   from the plan: under a mask a block travels only as far as the last rank that needs
    ///   it (fewer hops, and the dK/dV accumulator goes straight home from there).
    /// - `.allToAll` (Ulysses, DeepSpeed): each all-to-all sends (N - 1) / N of a rank's tensor
    ///   (whatever the mask: the full-sequence attention after it just takes the mask):
    ///   Q, K, V in and O (the output type), LSE out; the backward: Q, K, V, O, dO, LSE in and
    ///   fp32 dQ, dK, dV out. KV heads fewer than the ranks count one head per rank. Two steps.
    /// - `.tokenRing` (Wang et al.): N - 1 query-side blocks one way and N - 1 fp32 partials
    ///   back (``ringChoice(_:backward:)`` sets them beside the ring's).
    /// - `.doubleRing(ranksPerNode: m)` (LoongTrain): the inner ring's bytes inside each node,
    ///   one block per node step between nodes (`interNodeBytes`); the backward adds the fp32
    ///   dK/dV sums on both levels.
    /// - `.hierarchical(ulysses: u)`: Ulysses on u ranks, then the ring of N / u members with
    ///   u T tokens and Hkv / u heads.
    /// - `.allGather(headSlices:)`: exact for any split, from the plan: the K/V pieces the
    ///   rank sends to the ranks whose queries attend them (causal: only those before them),
    ///   and in the backward their fp32 dK/dV partials back; the busiest rank. One step per
    ///   head slice. (Llama 3 gathers everything: 2 (N - 1) T Hkv D b, named in the formula.)
    ///
    /// The in-process schedulers send exactly these bytes for even splits (ParallelTrafficTests).
    /// - Parameters:
    ///   - shape: heads, head dimension and storage type of the problem.
    ///   - backward: the backward pass instead of the forward.
    /// - Returns: the busiest rank's bytes per call, the communication steps and the formula.
    /// - Throws: `VkAttnError.unsupported` (op `context parallel attention`) where a pair of
    ///   the plan's pieces has no expressible sub-mask, as `validate` does;
    ///   `VkAttnError.invalidValue` for a double ring whose node size does not divide the ranks.
    public func expectedTraffic(_ shape: Shape, backward: Bool) throws -> ExpectedTraffic {
        switch scheme {
        case .tokenRing:
            try scheme.expect(linear: false, op: Self.opName)
            return tokenRingTraffic(shape, backward: backward)
        case let .doubleRing(m):
            try Self.checkTwoWayRing(scheme, mask: attention.mask, ranks: plan.ranks)
            return doubleRingTraffic(shape, ranksPerNode: m, backward: backward)
        default:
            break
        }
        let t = try traffic(shape, backward: backward)
        return ExpectedTraffic(bytes: t.perRank.max() ?? 0, steps: t.steps, formula: t.formula)
    }

    /// Bytes each rank sends per call, by the formulas of ``expectedTraffic(_:backward:)``
    /// (exact from the plan for the ring, the hybrid's ring and the all-gather; the
    /// all-to-all's even-split share for every rank).
    /// - Parameters:
    ///   - shape: heads, head dimension and storage type of the problem.
    ///   - backward: the backward pass instead of the forward.
    /// - Returns: One value per rank, in rank order.
    /// - Throws: As ``expectedTraffic(_:backward:)``.
    public func expectedBytesPerRank(_ shape: Shape, backward: Bool) throws -> [Double] {
        try traffic(shape, backward: backward).perRank
    }

    func traffic(_ shape: Shape, backward: Bool) throws -> (perRank: [Double], steps: Int, formula: String) {
        let n = plan.ranks
        let t = Double(plan.totalTokens) / Double(n)
        let b = Double(shape.dtype.byteSize), ob = Double((attention.outputDType ?? shape.dtype).byteSize)
        let hq = Double(shape.headsQ), hkv = Double(shape.headsKV), d = Double(shape.headDim)
        // KV heads per rank of a Ulysses group of u: a slice, or one replicated head.
        func kvPerRank(_ u: Int) -> Double { shape.headsKV % u == 0 ? hkv / Double(u) : 1 }
        // The ring over `members` (each with `kvHeads` K/V heads per rank), exact from the plan:
        // under the mask a block travels only as far as its last user (`RingReach`).
        func ring(_ members: [PieceSet], kvHeads: Int) throws -> (perMember: [Double], steps: Int, formula: String) {
            let r = members.count
            guard r > 1 else { return ([0], 1, "one member: no ring traffic") }
            let reach = try RingReach(members: members, pairs: PairAttention(base: attention))
            let bytes = (0..<r).map {
                Double(reach.bytes(member: $0, tokens: members.map(\.tokens), bytesPerToken: kvHeads * shape.headDim * shape.dtype.byteSize,
                                   gradientBytesPerToken: kvHeads * shape.headDim * 4, backward: backward))
            }
            let full = reach.reach.allSatisfy { $0 == r - 1 }
            let masked = full ? "" : "; under the mask each block travels only to its last user (hops \(reach.reach)), \(reach.skippedSteps) of \(r * r) (member, step) pairs compute nothing"
            let paper = backward
                ? "ring backward: (N-1) K/V blocks 2 (S/N) Hkv D b + N fp32 dK/dV blocks 2 (S/N) Hkv D 4, over N steps"
                : "ring (Liu et al.): per step one K and one V block, 2 (S/N) Hkv D b"
            return (bytes, reach.steps(backward: backward), paper + masked)
        }
        func ulysses(_ u: Int) -> (bytes: Double, formula: String) {
            guard u > 1 else { return (0, "") }
            let share = Double(u - 1)
            let q = share * t * (hq / Double(u)) * d
            let kv = share * t * kvPerRank(u) * d
            let lse = share * t * (hq / Double(u)) * 4
            if !backward {
                return (q * b + 2 * kv * b + q * ob + lse,
                        "Ulysses (DeepSpeed): each all-to-all sends (N-1)/N of a rank's tensor; in Q, K, V, out O and LSE")
            }
            return (2 * q * b + 2 * kv * b + q * ob + lse + q * 4 + 2 * kv * 4,
                    "Ulysses backward: in Q, K, V, O, dO, LSE; out fp32 dQ, dK, dV; each (N-1)/N of a rank's tensor")
        }
        try scheme.expect(linear: false, op: Self.opName)
        switch scheme {
        case .lasp, .lasp2, .zeco:
            return ([Double](repeating: 0, count: n), 0, "")  // refused above
        case .ring:
            let ranks = try ring(ringMembers(ulysses: 1), kvHeads: shape.headsKV)
            return (ranks.perMember, ranks.steps, ranks.formula)
        case .tokenRing, .doubleRing:
            // Their formulas assume the even split: every rank sends the same.
            let even = try expectedTraffic(shape, backward: backward)
            return ([Double](repeating: even.bytes, count: n), even.steps, even.formula)
        case .allToAll:
            let a2a = ulysses(n)
            return ([Double](repeating: a2a.bytes, count: n), 2, a2a.formula + "; the mask changes no byte: the full-sequence attention after the all-to-all takes it")
        case let .hierarchical(u):
            let a2a = ulysses(u)
            let between = try ring(ringMembers(ulysses: u), kvHeads: shape.headsKV % u == 0 ? shape.headsKV / u : 1)
            return ((0..<n).map { a2a.bytes + between.perMember[$0 / u] }, between.steps + (u > 1 ? 2 : 0),
                    "\(a2a.formula); between the groups (S/N -> u S/N tokens, Hkv/u heads) \(between.formula)")
        case let .allGather(slices):
            guard n > 1 else { return ([0], slices, "one rank: no traffic") }
            let needed = try (0..<n).map { try plan.keyPieces(neededBy: $0, mask: attention.mask) }
            func tokens(_ r: Int, _ c: Int) -> Double { Double(plan.pieces(rank: r)[c].tokens) }
            let perRank = (0..<n).map { r -> Double in
                let sent = needed.enumerated().filter { $0.offset != r }.reduce(0.0) { total, entry in
                    total + entry.element.filter { $0.rank == r }.reduce(0.0) { $0 + tokens($1.rank, $1.piece) }
                }
                let received = needed[r].reduce(0.0) { $0 + tokens($1.rank, $1.piece) }
                return 2 * hkv * d * (sent * b + (backward ? received * 4 : 0))
            }
            let full = Double(n - 1) * 2 * t * hkv * d * b
            return (
                perRank, slices,
                (backward ? "all-gather backward: the gather again plus fp32 dK/dV partials of every received piece back to its owner; " : "")
                    + "Llama 3 CP gathers 2 (N-1) (S/N) Hkv D b = \(Int(full)) B per rank; this scheme sends each piece only to the ranks whose queries attend it")
        }
    }

    /// The ring members of a Ulysses degree `u`: each group's shards one after another.
    func ringMembers(ulysses u: Int) -> [PieceSet] {
        (0..<plan.ranks / u).map { g in PieceSet(concatenating: (0..<u).map { PieceSet(plan.pieces(rank: g * u + $0)) }) }
    }

    /// The same schedule's bytes without a mask (`expectedTraffic` of this configuration with
    /// mask `.none`), to set beside the masked run's.
    /// - Parameters:
    ///   - shape: heads, head dimension and storage type of the problem.
    ///   - backward: the backward pass instead of the forward.
    /// - Returns: the busiest rank's bytes per call without a mask, the steps and the formula.
    /// - Throws: As ``expectedTraffic(_:backward:)``.
    public func unmaskedTraffic(_ shape: Shape, backward: Bool) throws -> ExpectedTraffic {
        var plain = self
        plain.attention.mask = .none
        return try plain.expectedTraffic(shape, backward: backward)
    }

    /// The (rank, step) pairs of the schedule that compute nothing because the mask empties
    /// every piece pair between the rank's queries and the step's keys: ring steps (a rank at
    /// step i and the block of rank - i), ring steps between Ulysses groups for each rank of
    /// the hybrid (Ulysses: its one step, the whole sequence), and (rank, source rank) pairs of
    /// the all-gather (whose pieces are then not gathered).
    /// - Returns: The skipped pairs and all pairs.
    /// - Throws: As ``expectedTraffic(_:backward:)``.
    public func skippedSteps() throws -> (skipped: Int, steps: Int) {
        let n = plan.ranks, pairs = PairAttention(base: attention)
        func ring(_ u: Int) throws -> (skipped: Int, steps: Int) {
            let reach = try RingReach(members: ringMembers(ulysses: u), pairs: pairs)
            return (reach.skippedSteps * u, n * (n / u))
        }
        switch scheme {
        case .ring: return try ring(1)
        case .allToAll: return try ring(n)
        case let .hierarchical(u): return try ring(u)
        case .allGather, .tokenRing, .doubleRing:
            // Every (query rank, key rank) pair is one step of these (TokenRing and the double
            // ring still send a skipped step's partial or block: their bytes do not change).
            let sets = (0..<n).map { PieceSet(plan.pieces(rank: $0)) }
            let skipped = try sets.reduce(0) { total, queries in
                total + (try sets.filter { try pairs.pairs(queries: queries, keys: $0).isEmpty }.count)
            }
            return (skipped, n * n)
        case .lasp, .lasp2, .zeco:
            try scheme.expect(linear: false, op: Self.opName)
            return (0, 0)
        }
    }
}
