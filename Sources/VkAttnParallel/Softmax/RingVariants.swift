import VkAttn

// TokenRing and the double ring beside the K/V ring: their checks, their traffic formulas,
// and the chooser between the K/V ring and TokenRing.

/// The bytes of the K/V ring and of TokenRing for one problem, and the one to run: the scheme
/// whose busiest link direction carries fewer bytes per rank. The K/V ring sends everything
/// one way; TokenRing splits its bytes between the two directions of each link (queries one
/// way, partials the other), so a full-duplex link's time follows the larger of its two.
/// Few KV heads against many query heads (GQA) favour the K/V ring; f32 MHA favours TokenRing.
public struct RingChoice: Hashable, Sendable {
    /// The K/V ring's bytes per rank (`ContextParallelAttention.expectedTraffic` of `.ring`).
    public var kvRing: ExpectedTraffic
    /// TokenRing's bytes per rank, both directions together.
    public var tokenRing: ExpectedTraffic
    /// Bytes the K/V ring sends one way per rank (all of `kvRing.bytes`).
    public var kvRingDirectionBytes: Double
    /// Bytes of TokenRing's busier direction per rank: the travelling query blocks or the
    /// returning partials.
    public var tokenRingDirectionBytes: Double

    /// `.tokenRing` when its busier direction carries fewer bytes than the K/V ring, else `.ring`.
    public var scheme: ContextParallelScheme { tokenRingDirectionBytes < kvRingDirectionBytes ? .tokenRing : .ring }
}

extension ContextParallelAttention {
    /// TokenRing and the double ring take mask none or causal; the double ring's node size
    /// must divide the ranks.
    static func checkTwoWayRing(_ scheme: ContextParallelScheme, mask: AttentionMask, ranks: Int) throws {
        guard mask.windowLeft == nil, mask.windowRight == nil, mask.blocks == nil else {
            throw VkAttnError.unsupported(op: opName, reason: "\(scheme) takes mask none or causal (no window or block mask yet)")
        }
        if case let .doubleRing(m) = scheme, m < 1 || ranks % m != 0 {
            throw VkAttnError.invalidValue(op: opName, operand: "ranksPerNode", reason: "\(m) does not divide \(ranks) ranks")
        }
    }

    /// Picks between the K/V ring and TokenRing for this plan by their bytes per link direction.
    /// - Parameters:
    ///   - shape: heads, head dimension and storage type of the problem.
    ///   - backward: compare the backward passes instead of the forwards.
    /// - Returns: both schemes' expected bytes per rank and the pick.
    /// - Throws: As ``expectedTraffic(_:backward:)``.
    public func ringChoice(_ shape: Shape, backward: Bool) throws -> RingChoice {
        var kv = self, token = self
        kv.scheme = .ring
        token.scheme = .tokenRing
        let kvTraffic = try kv.expectedTraffic(shape, backward: backward)
        let tokenTraffic = try token.expectedTraffic(shape, backward: backward)
        let split = tokenRingDirections(shape, backward: backward)
        return RingChoice(kvRing: kvTraffic, tokenRing: tokenTraffic, kvRingDirectionBytes: kvTraffic.bytes,
                          tokenRingDirectionBytes: max(split.out, split.back))
    }

    /// TokenRing's bytes per rank for an even split (T = S / N): N - 1 travelling blocks and
    /// N - 1 returning partials. Forward: Q blocks T Hq D b out, fp32 (O, LSE) T Hq (D + 1) 4
    /// back. Backward: Q, O, dO and LSE blocks T Hq (D (2 b + b_O) + 4) out, fp32 dQ T Hq D 4 back.
    func tokenRingDirections(_ shape: Shape, backward: Bool) -> (out: Double, back: Double) {
        let n = Double(plan.ranks), t = Double(plan.totalTokens) / n
        let b = Double(shape.dtype.byteSize), ob = Double((attention.outputDType ?? shape.dtype).byteSize)
        let hq = Double(shape.headsQ), d = Double(shape.headDim)
        guard !backward else { return ((n - 1) * t * hq * (d * (2 * b + ob) + 4), (n - 1) * t * hq * d * 4) }
        return ((n - 1) * t * hq * d * b, (n - 1) * t * hq * (d + 1) * 4)
    }

    func tokenRingTraffic(_ shape: Shape, backward: Bool) -> ExpectedTraffic {
        let n = plan.ranks
        guard n > 1 else { return ExpectedTraffic(bytes: 0, steps: 1, formula: "one rank: no TokenRing traffic") }
        let split = tokenRingDirections(shape, backward: backward)
        let formula = backward
            ? "TokenRing backward (Wang et al.): (N-1) Q, O, dO, LSE blocks (S/N) Hq (D (2b + b_O) + 4) one way + (N-1) fp32 dQ partials (S/N) Hq D 4 back to their owners"
            : "TokenRing (Wang et al.): (N-1) Q blocks (S/N) Hq D b one way + (N-1) fp32 partials (O, LSE) (S/N) Hq (D+1) 4 back to their owners"
        return ExpectedTraffic(bytes: split.out + split.back, steps: n - 1, formula: formula)
    }

    /// The double ring's bytes per rank for an even split, G = N / m nodes of m ranks, K/V
    /// block B = 2 (S/N) Hkv D b, fp32 dK/dV block F = 2 (S/N) Hkv D 4. Forward: G (m - 1) B
    /// inside the node (the inner ring per node step), (G - 1) B between nodes. Backward: the
    /// inner ring's G ((m - 1) B + m F) (none for m = 1), and (G - 1) (B + F) between nodes
    /// (the blocks, and each node's dK/dV sums back to their owners).
    func doubleRingTraffic(_ shape: Shape, ranksPerNode m: Int, backward: Bool) -> ExpectedTraffic {
        let n = plan.ranks, g = Double(n / m), md = Double(m)
        let t = Double(plan.totalTokens) / Double(n)
        let block = 2 * t * Double(shape.headsKV * shape.headDim * shape.dtype.byteSize)
        let sums = 2 * t * Double(shape.headsKV * shape.headDim * 4)
        let intra = m > 1 ? g * ((md - 1) * block + (backward ? md * sums : 0)) : 0
        let inter = (g - 1) * (block + (backward ? sums : 0))
        let formula = backward
            ? "double ring backward (LoongTrain): intra-node G ((m-1) B + m F), inter-node (G-1) (B + F); B = 2 (S/N) Hkv D b, F = 2 (S/N) Hkv D 4, G = N/m nodes of m ranks"
            : "double ring (LoongTrain): intra-node G (m-1) B, inter-node (G-1) B; B = 2 (S/N) Hkv D b, G = N/m nodes of m ranks"
        return ExpectedTraffic(bytes: intra + inter, steps: max(1, n - (backward ? 0 : 1)), formula: formula, interNodeBytes: inter)
    }
}
