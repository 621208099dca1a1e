import VkAttn

// The context-parallel front end's shared vocabulary: one scheme type, one shape, one output
// and one gradient type for every scheduler (softmax attention, linear attention, the linear
// recurrence), each of which validates with `validate(_ shape:, ranks:)` before anything is
// posted.

/// How the ranks of a context-parallel group split one sequence and exchange data: one switch
/// per call, as TransformerEngine's cp_comm_type. Softmax attention (`ContextParallelAttention`)
/// takes `ring`, `tokenRing`, `doubleRing`, `allGather`, `allToAll` and `hierarchical`; linear attention
/// (`ContextParallelLinearAttention`) and the recurrence (`ContextParallelRecurrence`) take
/// `lasp`, `lasp2` and `zeco`. A scheme of the other family is a typed error.
public enum ContextParallelScheme: Hashable, Sendable, CustomStringConvertible {
    /// Ring attention (p2p): K/V blocks rotate around the ranks while the current block
    /// computes; partials merged with the exact LSE rule; the backward sends dK/dV around.
    case ring
    /// Each rank gathers the K/V its queries need (under a causal mask only the blocks before
    /// them), `headSlices` slices of the KV heads at a time, the next slice's transfer running
    /// while the current one computes; the backward returns dK/dV partials to their owners.
    case allGather(headSlices: Int)
    /// Ulysses (a2a): all-to-all from sequence shards to head shards, attention over the whole
    /// sequence for Hq / N heads, all-to-all back.
    case allToAll
    /// 2-D (a2a+p2p, USP / LoongTrain): ranks form (N / ulysses) x ulysses; all-to-all inside
    /// each group of `ulysses` consecutive ranks, ring attention between the groups.
    case hierarchical(ulysses: Int)
    /// TokenRing (Wang et al. 2024): K/V stay put; query blocks travel one way around the
    /// ring and the fp32 partial (O, LSE) of each block goes back to its owner, so both
    /// directions of the links carry traffic. The backward sends Q, O, dO and LSE one way and
    /// dQ partials back; dK/dV accumulate locally.
    case tokenRing
    /// The double ring (LoongTrain, Gu et al. 2024): nodes of `ranksPerNode` consecutive ranks;
    /// K/V blocks of the other nodes arrive over an outer ring between nodes (one transfer per
    /// node step) while an inner ring circulates the current node step's blocks inside the node.
    case doubleRing(ranksPerNode: Int)
    /// LASP (Sun et al.): the serial chain of states; rank r waits for the prefix of ranks 0..<r.
    case lasp
    /// LASP-2 (Sun et al. 2025): one all-gather of every rank's state map, a local prefix combine.
    case lasp2
    /// ZeCO (Chou et al. 2025): the chain pipelined in `segments` row segments, so the next
    /// rank combines the first rows while later ones are in flight.
    case zeco(segments: Int)

    /// Whether the scheme passes recurrent states (LASP, LASP-2, ZeCO) rather than keys and values.
    public var isLinear: Bool {
        switch self {
        case .lasp, .lasp2, .zeco: return true
        case .ring, .tokenRing, .doubleRing, .allGather, .allToAll, .hierarchical: return false
        }
    }

    /// The exclusive all-scan a linear scheme runs over the ranks' affine state maps; nil for
    /// the softmax schemes.
    public var allScanAlgorithm: AllScanAlgorithm? {
        switch self {
        case .lasp: return .chain(segments: 1)
        case .lasp2: return .allGather
        case let .zeco(segments): return .chain(segments: segments)
        case .ring, .tokenRing, .doubleRing, .allGather, .allToAll, .hierarchical: return nil
        }
    }

    /// The linear scheme that runs `algorithm`.
    /// - Parameter algorithm: a chain (LASP with one segment, ZeCO with more) or an all-gather (LASP-2).
    /// - Returns: `.lasp`, `.zeco(segments:)` or `.lasp2`.
    public static func linear(_ algorithm: AllScanAlgorithm) -> ContextParallelScheme {
        switch algorithm {
        case .chain(segments: 1): return .lasp
        case let .chain(segments): return .zeco(segments: segments)
        case .allGather: return .lasp2
        }
    }

    /// `ring`, `token-ring`, `double-ring(K ranks per node)`, `all-gather(S head slices)`,
    /// `all-to-all`, `hierarchical(ulysses U)`, `lasp`,
    /// `lasp2` or `zeco(K segments)`, as paths and the bench print it.
    public var description: String {
        switch self {
        case .ring: return "ring"
        case .tokenRing: return "token-ring"
        case let .doubleRing(m): return "double-ring(\(m) ranks per node)"
        case let .allGather(slices): return "all-gather(\(slices) head slices)"
        case .allToAll: return "all-to-all"
        case let .hierarchical(u): return "hierarchical(ulysses \(u))"
        case .lasp: return "lasp"
        case .lasp2: return "lasp2"
        case let .zeco(segments): return "zeco(\(segments) segments)"
        }
    }

    /// Throws unless the scheme belongs to the family `op` runs.
    func expect(linear: Bool, op: String) throws {
        guard isLinear == linear else {
            throw VkAttnError.unsupported(op: op, reason: "\(self) is a \(isLinear ? "linear-attention" : "softmax-attention") scheme; this op takes \(linear ? "lasp, lasp2 or zeco" : "ring, tokenRing, doubleRing, allGather, allToAll or hierarchical")")
        }
    }
}

/// The per-rank problem a context-parallel op checks, the same on every rank.
///
/// Softmax attention: tokens are packed by the `ShardPlan` (`batch` 1); Q [tokens, headsQ,
/// headDim], K, V [tokens, headsKV, headDim], `valueDim` = `headDim`, `dtype` f32 or f16.
/// Linear attention: q, k [batch, L_r, heads, headDim], v [batch, L_r, heads, valueDim], fp32,
/// `headsQ` = `headsKV` = heads.
public struct ContextParallelShape: Hashable, Sendable {
    /// Independent sequences along the leading axis (1 for the packed softmax layout).
    public var batch: Int
    /// Query heads, and key/value heads (equal for linear attention).
    public var headsQ: Int, headsKV: Int
    /// Head dimension of Q and K; of V and the output.
    public var headDim: Int, valueDim: Int
    /// Element type of the inputs.
    public var dtype: DType

    /// A softmax-attention shape.
    /// - Parameters:
    ///   - headsQ: query heads.
    ///   - headsKV: key/value heads (a divisor of `headsQ`).
    ///   - headDim: D.
    ///   - dtype: f32 or f16.
    public init(headsQ: Int, headsKV: Int, headDim: Int, dtype: DType) {
        (batch, self.headsQ, self.headsKV, self.headDim, valueDim, self.dtype) = (1, headsQ, headsKV, headDim, headDim, dtype)
    }

    /// A linear-attention shape (fp32).
    /// - Parameters:
    ///   - batch: B.
    ///   - heads: H.
    ///   - dk: key (and query) dimension.
    ///   - dv: value dimension.
    public init(batch: Int, heads: Int, dk: Int, dv: Int) {
        (self.batch, headsQ, headsKV, headDim, valueDim, dtype) = (batch, heads, heads, dk, dv, .f32)
    }

    var heads: Int { headsQ }
    var dk: Int { headDim }
    var dv: Int { valueDim }
}

/// One rank's forward result, for every context-parallel op (the tensors given in `into:`,
/// where given).
public struct ContextParallelOutput: Sendable {
    /// The rank's output rows: O [localTokens, Hq, D] (softmax; `attention.outputDType`,
    /// default the input type) or o [B, L_r, H, Dv] fp32 (linear).
    public let output: Tensor
    /// LSE [Hq, localTokens] fp32 of the rank's queries (softmax); nil for linear attention.
    public let lse: Tensor?
    /// S_in [B, H, Dk, Dv]: the state entering the rank's shard (linear; the backward takes it
    /// back); nil for softmax attention.
    public let incomingState: Tensor?
    /// The state after the whole sequence: on the last rank of a linear op when asked for, else nil.
    public let finalState: Tensor?
    /// The schedule taken, e.g. `ring x4 zigzag, 10 attention calls, host-mapped`.
    public let path: String

    /// A result.
    /// - Parameters:
    ///   - output: the output rows.
    ///   - lse: the softmax LSE, or nil.
    ///   - incomingState: the linear incoming state, or nil.
    ///   - finalState: the linear final state, or nil.
    ///   - path: the schedule taken.
    public init(output: Tensor, lse: Tensor? = nil, incomingState: Tensor? = nil, finalState: Tensor? = nil, path: String) {
        (self.output, self.lse, self.incomingState, self.finalState, self.path) = (output, lse, incomingState, finalState, path)
    }
}

/// One rank's gradients, for every context-parallel op (the tensors given in `into:`, where given).
public struct ContextParallelGradients: Sendable {
    /// dQ, dK, dV of the rank's tokens, in the shapes of Q, K, V.
    public let dq: Tensor, dk: Tensor, dv: Tensor
    /// d(log-gates) in the gates' shape (gated linear attention); nil otherwise.
    public let dLogGates: Tensor?
    /// The gradient of the global initial state: on rank 0 of a linear op, else nil.
    public let dInitialState: Tensor?
    /// The schedule taken.
    public let path: String

    /// Gradients.
    /// - Parameters:
    ///   - dq: dQ.
    ///   - dk: dK.
    ///   - dv: dV.
    ///   - dLogGates: d(log-gates), or nil.
    ///   - dInitialState: the initial state's gradient, or nil.
    ///   - path: the schedule taken.
    public init(dq: Tensor, dk: Tensor, dv: Tensor, dLogGates: Tensor? = nil, dInitialState: Tensor? = nil, path: String) {
        (self.dq, self.dk, self.dv, self.dLogGates, self.dInitialState, self.path) = (dq, dk, dv, dLogGates, dInitialState, path)
    }
}

/// Runs `body` on every communicator of an in-process group concurrently (each rank its own
/// task, as every op's all-ranks form does); the first failure aborts the group, so no rank
/// waits forever on a peer that failed.
/// - Parameters:
///   - communicators: One per rank.
///   - body: One rank's work.
/// - Returns: The results, in rank order.
/// - Throws: The first failure.
public func onEveryRank<C: Communicator, R: Sendable>(_ communicators: [C],
                                                 _ body: @escaping @Sendable (C) async throws -> R) async throws -> [R] {
    try await withThrowingTaskGroup(of: (Int, R).self) { tasks in
        for comm in communicators {
            tasks.addTask {
                do {
                    return (comm.rank, try await body(comm))
                } catch {
                    comm.abort(error)
                    throw error
                }
            }
        }
        var results = [R?](repeating: nil, count: communicators.count)
        for try await (rank, value) in tasks { results[rank] = value }
        return results.compactMap { $0 }
    }
}
