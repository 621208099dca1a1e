import VkAttn
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// CPU reference of the attention kernels, fp64 throughout: what the tests and
/// `vkattn-bench --check` compare against. Inputs are flat Float arrays in the layouts of
/// `FlashAttention` (shapes as the tensors would have them).
public enum AttentionReference {
    /// One query row of one head: (sequence b, query i within it, query head h).
    public struct Row: Hashable, Sendable {
        /// The sequence `b`, the query `i` within it, the query head `h`.
        public let b: Int, i: Int, h: Int
        /// - Parameters:
        ///   - b: The sequence.
        ///   - i: The query within the sequence.
        ///   - h: The query head.
        public init(b: Int, i: Int, h: Int) { self.b = b; self.i = i; self.h = h }
    }

    /// The problem, resolved from shapes; throws the same errors as the kernels.
    public struct Problem: Sendable {
        let g: AttentionGeometry
        /// The configuration: mask, scale, softcap (the output type plays no part in fp64).
        public let attention: FlashAttention
        /// Sequences.
        public var batch: Int { g.batch }
        /// Query heads.
        public var headsQ: Int { g.headsQ }
        /// Key/value heads.
        public var headsKV: Int { g.headsKV }
        /// Dk: the width of Q and K rows.
        public var headDim: Int { g.headDim }
        /// Dv: the width of V and O rows.
        public var headDimV: Int { g.headDimV }

        /// - Parameters:
        ///   - qShape: Q's shape in `layout`.
        ///   - kShape: K's shape.
        ///   - vShape: V's shape (K's with Dv); nil: K's.
        ///   - layout: Dense or packed.
        ///   - attention: The configuration.
        /// - Throws: `VkAttnError`, as the kernels for the same shapes and options.
        public init(qShape: [Int], kShape: [Int], vShape: [Int]? = nil, layout: AttentionLayout = .dense, attention: FlashAttention) throws {
            g = try AttentionGeometry.resolve(op: "AttentionReference", qShape: qShape, kShape: kShape, vShape: vShape ?? kShape, dtype: .f32, layout: layout)
            self.attention = attention
            _ = try attention.checkOptions(op: "AttentionReference", g)
        }

        /// Every row of the problem.
        public var rows: [Row] {
            var result: [Row] = []
            for b in 0..<g.batch {
                for i in 0..<g.sequence(b).sq { for h in 0..<g.headsQ { result.append(Row(b: b, i: i, h: h)) } }
            }
            return result
        }

        /// Offsets (in elements) of a row's Dk values in Q and of its LSE.
        /// - Parameter row: A row of the problem.
        /// - Returns: The element offset of its Dk values in Q (and dQ).
        public func qOffset(_ row: Row) -> Int { g.qOffset(b: row.b, i: row.i, h: row.h) }
        /// The element offset of a row's Dv values in O (and dO).
        /// - Parameter row: A row of the problem.
        /// - Returns: The offset in O's layout.
        public func oOffset(_ row: Row) -> Int { g.oOffset(b: row.b, i: row.i, h: row.h) }
        /// The element offset of a row's LSE.
        /// - Parameter row: A row of the problem.
        /// - Returns: The offset in the LSE layout.
        public func lseOffset(_ row: Row) -> Int { g.lseOffset(b: row.b, i: row.i, h: row.h) }

        var scale: Double { Double(attention.scale ?? 1 / Float(g.headDim).squareRoot()) }

        /// The row's sink logit (natural units), or nil without sinks.
        func sink(_ row: Row) -> Double? { attention.sinks.map { Double($0[row.h]) } }

        /// Logits (natural units, after scale, softcap and ALiBi) of one row against its keys,
        /// with the raw scaled dot products (the backward needs them for the softcap derivative).
        func logits(_ row: Row, q: [Float], k: [Float]) -> [(j: Int, s: Double, u: Double)] {
            let seq = g.sequence(row.b)
            let hk = row.h / g.groupSize
            let qo = g.qOffset(b: row.b, i: row.i, h: row.h)
            let slope = attention.alibiSlopes.map { Double($0[row.h]) }
            let diagonal = attention.mask.diagonal(query: row.i, sq: seq.sq, sk: seq.sk)
            var out: [(Int, Double, Double)] = []
            for j in 0..<seq.sk where attention.mask.allows(head: row.h, query: row.i, key: j, sq: seq.sq, sk: seq.sk) {
                let ko = g.kOffset(b: row.b, j: j, h: hk)
                var dot = 0.0
                for d in 0..<g.headDim { dot += Double(q[qo + d]) * Double(k[ko + d]) }
                let u = dot * scale
                var s = u
                if let cap = attention.softcap.map(Double.init) { s = cap * tanh(u / cap) }
                if let slope { s -= slope * Double(abs(j - diagonal)) }
                out.append((j, s, u))
            }
            return out
        }
    }

    /// O (Dv values) and LSE of one row; a row that sees no key has O = 0 and LSE = -inf (or
    /// the sink's logit, with sinks: the sink joins the softmax denominator and adds nothing to O).
    /// - Parameters:
    ///   - problem: The problem.
    ///   - row: The row.
    ///   - q: Q, flat in the problem's layout.
    ///   - k: K, flat.
    ///   - v: V, flat.
    /// - Returns: The row's O (Dv values) and LSE.
    public static func forward(_ problem: Problem, row: Row, q: [Float], k: [Float], v: [Float]) -> (o: [Double], lse: Double) {
        let g = problem.g
        let logits = problem.logits(row, q: q, k: k)
        let sink = problem.sink(row)
        guard let m = (logits.map(\.s) + (sink.map { [$0] } ?? [])).max() else {
            return ([Double](repeating: 0, count: g.headDimV), -.infinity)
        }
        var l = sink.map { exp($0 - m) } ?? 0
        var o = [Double](repeating: 0, count: g.headDimV)
        let hk = row.h / g.groupSize
        for (j, s, _) in logits {
            let p = exp(s - m)
            l += p
            let vo = g.vOffset(b: row.b, j: j, h: hk)
            for d in 0..<g.headDimV { o[d] += p * Double(v[vo + d]) }
        }
        return (o.map { $0 / l }, m + log(l))
    }

    /// The whole forward: O in O's layout (Q's with Dv), LSE in the LSE layout.
    /// - Parameters:
    ///   - problem: The problem.
    ///   - q: Q, flat in the problem's layout.
    ///   - k: K, flat.
    ///   - v: V, flat.
    /// - Returns: O and LSE, flat.
    public static func forward(_ problem: Problem, q: [Float], k: [Float], v: [Float]) -> (o: [Double], lse: [Double]) {
        let g = problem.g
        var o = [Double](repeating: 0, count: g.totalQ * g.headsQ * g.headDimV)
        var lse = [Double](repeating: -.infinity, count: g.totalQ * g.headsQ)
        for row in problem.rows {
            let r = forward(problem, row: row, q: q, k: k, v: v)
            let oo = problem.oOffset(row)
            for d in 0..<g.headDimV { o[oo + d] = r.o[d] }
            lse[problem.lseOffset(row)] = r.lse
        }
        return (o, lse)
    }

    /// Gradients of sum(dO * O) with respect to Q, K and V, in their layouts (dK, dV summed
    /// over the query heads of each group), and with sinks, with respect to each head's sink
    /// (`dsinks`, empty without).
    /// - Parameters:
    ///   - problem: The problem.
    ///   - q: Q, flat.
    ///   - k: K, flat.
    ///   - v: V, flat.
    ///   - dO: The gradient of O, O's layout.
    /// - Returns: dQ, dK, dV, flat, and dsinks ([Hq]).
    public static func backward(_ problem: Problem, q: [Float], k: [Float], v: [Float], dO: [Float])
        -> (dq: [Double], dk: [Double], dv: [Double], dsinks: [Double]) {
        let g = problem.g
        let dim = g.headDim, dimV = g.headDimV
        var dq = [Double](repeating: 0, count: q.count)
        var dk = [Double](repeating: 0, count: k.count)
        var dv = [Double](repeating: 0, count: v.count)
        var dsinks = [Double](repeating: 0, count: problem.attention.sinks == nil ? 0 : g.headsQ)
        let cap = problem.attention.softcap.map(Double.init)
        for row in problem.rows {
            let fwd = forward(problem, row: row, q: q, k: k, v: v)
            guard fwd.lse > -.infinity else { continue }
            let qo = problem.qOffset(row), oo = problem.oOffset(row)
            let hk = row.h / g.groupSize
            var rowD = 0.0
            for d in 0..<dimV { rowD += Double(dO[oo + d]) * fwd.o[d] }
            // dL/dsink = -p_sink * (dO . O) per row.
            if let sink = problem.sink(row) { dsinks[row.h] -= exp(sink - fwd.lse) * rowD }
            for (j, s, u) in problem.logits(row, q: q, k: k) {
                let p = exp(s - fwd.lse)
                let ko = g.kOffset(b: row.b, j: j, h: hk), vo = g.vOffset(b: row.b, j: j, h: hk)
                var dp = 0.0
                for d in 0..<dimV {
                    dv[vo + d] += p * Double(dO[oo + d])
                    dp += Double(dO[oo + d]) * Double(v[vo + d])
                }
                var ds = p * (dp - rowD)
                if let cap { let t = tanh(u / cap); ds *= 1 - t * t }
                ds *= problem.scale
                for d in 0..<dim {
                    dq[qo + d] += ds * Double(k[ko + d])
                    dk[ko + d] += ds * Double(q[qo + d])
                }
            }
        }
        return (dq, dk, dv, dsinks)
    }

    /// Combines partial results over disjoint key sets of the same queries: per row,
    /// LSE = log(sum exp(LSE_p)) and O = sum exp(LSE_p - LSE) O_p.
    /// - Parameters:
    ///   - o: Each partial's O of the row.
    ///   - lse: Each partial's LSE of the row (-inf: the partial saw no key).
    /// - Returns: The merged O and LSE (O = 0, LSE = -inf when no partial saw a key).
    public static func merge(o: [[Double]], lse: [Double]) -> (o: [Double], lse: Double) {
        let dim = o.first?.count ?? 0
        guard let m = lse.max(), m > -.infinity else { return ([Double](repeating: 0, count: dim), -.infinity) }
        let total = lse.reduce(0.0) { $0 + exp($1 - m) }
        let result = m + log(total)
        var out = [Double](repeating: 0, count: dim)
        for (part, l) in zip(o, lse) where l > -.infinity {
            let w = exp(l - result)
            for d in 0..<dim { out[d] += w * part[d] }
        }
        return (out, result)
    }
}

extension AttentionReference {
    /// dQ of one query row (fp64), from scratch: the row's own LSE and Delta are recomputed.
    /// - Parameters:
    ///   - problem: The problem.
    ///   - row: The row.
    ///   - q: Q, flat.
    ///   - k: K, flat.
    ///   - v: V, flat.
    ///   - dO: The gradient of O, flat.
    /// - Returns: The row's dQ (Dk values).
    public static func queryGradient(_ problem: Problem, row: Row, q: [Float], k: [Float], v: [Float], dO: [Float]) -> [Double] {
        let g = problem.g
        let fwd = forward(problem, row: row, q: q, k: k, v: v)
        var dq = [Double](repeating: 0, count: g.headDim)
        guard fwd.lse > -.infinity else { return dq }
        let oo = problem.oOffset(row)
        let hk = row.h / g.groupSize
        var rowD = 0.0
        for d in 0..<g.headDimV { rowD += Double(dO[oo + d]) * fwd.o[d] }
        let cap = problem.attention.softcap.map(Double.init)
        for (j, s, u) in problem.logits(row, q: q, k: k) {
            let ko = g.kOffset(b: row.b, j: j, h: hk), vo = g.vOffset(b: row.b, j: j, h: hk)
            var dp = 0.0
            for d in 0..<g.headDimV { dp += Double(dO[oo + d]) * Double(v[vo + d]) }
            var ds = exp(s - fwd.lse) * (dp - rowD)
            if let cap { let t = tanh(u / cap); ds *= 1 - t * t }
            for d in 0..<g.headDim { dq[d] += problem.scale * ds * Double(k[ko + d]) }
        }
        return dq
    }

    /// dK and dV of one key (sequence b, key j, key/value head h), summed over the group's
    /// query heads, given each query row's LSE and O as the device computed them (checking
    /// these on sampled rows is the forward check's job). Costs O(Sq * D) per key instead of
    /// a whole reference forward, so large problems can be spot-checked.
    /// - Parameters:
    ///   - problem: The problem.
    ///   - b: The sequence.
    ///   - j: The key within the sequence.
    ///   - h: The key/value head.
    ///   - q: Q, flat.
    ///   - k: K, flat.
    ///   - v: V, flat.
    ///   - dO: The gradient of O, flat.
    ///   - o: O as the device computed it.
    ///   - lse: LSE as the device computed it.
    /// - Returns: The key's dK (Dk values) and dV (Dv values).
    public static func keyGradient(_ problem: Problem, b: Int, j: Int, h: Int, q: [Float], k: [Float], v: [Float],
                                   dO: [Float], o: [Float], lse: [Float]) -> (dk: [Double], dv: [Double]) {
        let g = problem.g
        let seq = g.sequence(b)
        let ko = g.kOffset(b: b, j: j, h: h), vo = g.vOffset(b: b, j: j, h: h)
        var dk = [Double](repeating: 0, count: g.headDim), dv = [Double](repeating: 0, count: g.headDimV)
        let cap = problem.attention.softcap.map(Double.init)
        for hq in h * g.groupSize..<(h + 1) * g.groupSize {
            for i in 0..<seq.sq where problem.attention.mask.allows(head: hq, query: i, key: j, sq: seq.sq, sk: seq.sk) {
                let qo = g.qOffset(b: b, i: i, h: hq), oo = g.oOffset(b: b, i: i, h: hq)
                let rowLSE = Double(lse[g.lseOffset(b: b, i: i, h: hq)])
                guard rowLSE > -.infinity else { continue }
                var dot = 0.0, dp = 0.0, rowD = 0.0
                for d in 0..<g.headDim { dot += Double(q[qo + d]) * Double(k[ko + d]) }
                for d in 0..<g.headDimV {
                    dp += Double(dO[oo + d]) * Double(v[vo + d])
                    rowD += Double(dO[oo + d]) * Double(o[oo + d])
                }
                let u = dot * problem.scale
                var s = u
                if let cap { s = cap * tanh(u / cap) }
                if let slopes = problem.attention.alibiSlopes {
                    s -= Double(slopes[hq]) * Double(abs(j - problem.attention.mask.diagonal(query: i, sq: seq.sq, sk: seq.sk)))
                }
                let p = exp(s - rowLSE)
                var ds = p * (dp - rowD)
                if let cap { let t = tanh(u / cap); ds *= 1 - t * t }
                for d in 0..<g.headDimV { dv[d] += p * Double(dO[oo + d]) }
                for d in 0..<g.headDim { dk[d] += problem.scale * ds * Double(q[qo + d]) }
            }
        }
        return (dk, dv)
    }

    /// Offset of key j of sequence b, head h, in K's layout.
    /// - Parameters:
    ///   - problem: The problem.
    ///   - b: The sequence.
    ///   - j: The key within the sequence.
    ///   - h: The key/value head.
    /// - Returns: The element offset of its Dk values in K (and dK).
    public static func keyOffset(_ problem: Problem, b: Int, j: Int, h: Int) -> Int { problem.g.kOffset(b: b, j: j, h: h) }

    /// Offset of value j of sequence b, head h, in V's layout.
    /// - Parameters:
    ///   - problem: The problem.
    ///   - b: The sequence.
    ///   - j: The key within the sequence.
    ///   - h: The key/value head.
    /// - Returns: The element offset of its Dv values in V (and dV).
    public static func valueOffset(_ problem: Problem, b: Int, j: Int, h: Int) -> Int { problem.g.vOffset(b: b, j: j, h: h) }

    /// Sequence lengths (queries, keys) of sequence b.
    /// - Parameters:
    ///   - problem: The problem.
    ///   - b: The sequence.
    /// - Returns: Its query and key counts.
    public static func lengths(_ problem: Problem, b: Int) -> (sq: Int, sk: Int) {
        let s = problem.g.sequence(b)
        return (s.sq, s.sk)
    }
}
