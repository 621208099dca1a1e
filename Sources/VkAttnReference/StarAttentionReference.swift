import VkAttn
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// fp64 reference of Star Attention's two-phase prefill (`StarAttention` in VkAttnParallel), and
/// of the exact causal attention it approximates, over one sequence of context tokens followed
/// by query tokens. Q [S, Hq, D], K, V [S, Hkv, D] (S = context + query tokens), O like Q,
/// LSE [Hq, S]: the packed layouts of one sequence.
///
/// Which keys a token attends:
/// - a context token of block 0 (rank 0's): the tokens up to it (exact);
/// - a context token of block r > 0: the anchor (context tokens 0..<anchor) and the tokens of
///   its own block up to it (phase 1: what Star Attention approximates);
/// - a query token: every token up to it (phase 2: exact).
public struct StarAttentionReference: Sendable {
    /// Context tokens of each block, in rank order (block r starts after blocks 0..<r).
    public let contextLengths: [Int]
    /// Query tokens after the context.
    public let queryLength: Int
    /// Anchor tokens: the first context tokens every later block attends.
    public let anchor: Int
    /// Query heads, key/value heads (a divisor of `headsQ`) and head dimension.
    public let headsQ: Int, headsKV: Int, headDim: Int
    /// Softmax scale; nil means 1 / sqrt(D).
    public let scale: Float?
    /// Logit soft cap; nil means none.
    public let softcap: Float?

    /// A problem.
    /// - Parameters:
    ///   - contextLengths: Context tokens per block (rank), in order.
    ///   - queryLength: Query tokens after the context.
    ///   - anchor: Anchor tokens (at most block 0's).
    ///   - headsQ: Query heads.
    ///   - headsKV: Key/value heads.
    ///   - headDim: D.
    ///   - scale: Softmax scale; nil means 1 / sqrt(D).
    ///   - softcap: Logit soft cap; nil means none.
    public init(contextLengths: [Int], queryLength: Int, anchor: Int, headsQ: Int, headsKV: Int, headDim: Int,
                scale: Float? = nil, softcap: Float? = nil) {
        (self.contextLengths, self.queryLength, self.anchor) = (contextLengths, queryLength, anchor)
        (self.headsQ, self.headsKV, self.headDim, self.scale, self.softcap) = (headsQ, headsKV, headDim, scale, softcap)
    }

    /// Tokens of the whole sequence.
    public var totalTokens: Int { contextLengths.reduce(0, +) + queryLength }

    /// The key ranges token `t` attends under Star Attention (`exact: false`) or under exact
    /// causal attention (`exact: true`: 0...t).
    /// - Parameters:
    ///   - t: A token of the sequence, in 0..<totalTokens.
    ///   - exact: Causal attention over the whole sequence instead of Star Attention.
    /// - Returns: Disjoint, increasing ranges of key positions.
    public func keys(of t: Int, exact: Bool) -> [Range<Int>] {
        if exact { return [0..<(t + 1)] }
        var start = 0
        for (r, length) in contextLengths.enumerated() {
            if t < start + length {
                guard r > 0, anchor > 0 else { return [start..<(t + 1)] }
                return [0..<anchor, start..<(t + 1)]
            }
            start += length
        }
        return [0..<(t + 1)]
    }

    /// O and LSE of every token.
    /// - Parameters:
    ///   - q: Q [S, Hq, D], flat.
    ///   - k: K [S, Hkv, D], flat.
    ///   - v: V, K's layout.
    ///   - exact: Exact causal attention over the whole sequence (what Star Attention
    ///     approximates) instead of Star Attention.
    /// - Returns: O [S, Hq, D] and LSE [Hq, S], flat.
    public func forward(q: [Float], k: [Float], v: [Float], exact: Bool = false) -> (o: [Double], lse: [Double]) {
        let s = totalTokens, hq = headsQ, d = headDim, group = max(1, headsQ / max(1, headsKV))
        let scale = Double(self.scale ?? 1 / Float(d).squareRoot())
        let cap = softcap.map(Double.init)
        var o = [Double](repeating: 0, count: s * hq * d)
        var lse = [Double](repeating: -.infinity, count: hq * s)
        var logits: [Double] = []
        var acc = [Double](repeating: 0, count: d)
        for t in 0..<s {
            let ranges = keys(of: t, exact: exact)
            for h in 0..<hq {
                let qo = (t * hq + h) * d, hk = h / group
                logits.removeAll(keepingCapacity: true)
                for range in ranges {
                    for j in range {
                        let ko = (j * headsKV + hk) * d
                        var dot = 0.0
                        for x in 0..<d { dot += Double(q[qo + x]) * Double(k[ko + x]) }
                        var logit = dot * scale
                        if let cap { logit = cap * tanh(logit / cap) }
                        logits.append(logit)
                    }
                }
                guard let m = logits.max() else { continue }
                for x in 0..<d { acc[x] = 0 }
                var l = 0.0, i = 0
                for range in ranges {
                    for j in range {
                        let p = exp(logits[i] - m)
                        i += 1
                        l += p
                        let vo = (j * headsKV + hk) * d
                        for x in 0..<d { acc[x] += p * Double(v[vo + x]) }
                    }
                }
                for x in 0..<d { o[qo + x] = acc[x] / l }
                lse[h * s + t] = m + log(l)
            }
        }
        return (o, lse)
    }
}
