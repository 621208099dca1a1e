import VkAttn
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sequential fp64 reference of `DeltaRule`, step by step (S_t = a_t (I - beta_t k_t k_t^T)
/// S_{t-1} + beta_t k_t v_t^T, o_t = q_t S_t), forward and backward, shared by the tests and
/// `vkattn-bench --check`. Flat arrays in the op's packed layout: sequences one after another,
/// q, k [T, H, Dk]; v, o [T, H, Dv]; beta, log-decays [T, H]; states [N, H, Dk, Dv] (a dense
/// [B, L] batch is B sequences of L rows). The backward recomputes each segment of 64 steps
/// from a checkpointed state, so memory stays O(64 Dk Dv) per head.
public struct DeltaRuleReference: Sendable {
    /// Whether steps decay the state by exp(logDecay).
    public let gated: Bool
    /// Each sequence's rows.
    public let lengths: [Int]
    /// H, Dk and Dv.
    public let heads: Int, dk: Int, dv: Int

    /// A packed batch.
    /// - Parameters:
    ///   - gated: Gated DeltaNet or DeltaNet.
    ///   - lengths: Each sequence's rows, in order.
    ///   - heads: H.
    ///   - dk: Dk.
    ///   - dv: Dv.
    public init(gated: Bool, lengths: [Int], heads: Int, dk: Int, dv: Int) {
        self.gated = gated
        self.lengths = lengths
        self.heads = heads
        self.dk = dk
        self.dv = dv
    }

    /// Each row of `width` values scaled to unit L2 norm (rows of norm below 1e-3 divided by
    /// 1e-3): the models' normalised q and k, which the tests, the bench and the MPI checks draw.
    /// - Parameters:
    ///   - x: Rows of `width` values, flat.
    ///   - width: Values per row (Dk).
    /// - Returns: The normalised rows.
    public static func l2Normalised(_ x: [Float], width: Int) -> [Float] {
        var out = x
        guard width > 0 else { return out }
        for start in stride(from: 0, to: x.count, by: width) {
            let norm = (start..<(start + width)).reduce(Float(0)) { $0 + x[$1] * x[$1] }.squareRoot()
            for i in start..<(start + width) { out[i] = x[i] / max(norm, 1e-3) }
        }
        return out
    }

    /// Cumulative lengths (N + 1 entries from 0), the op's `cuSeqlens`.
    public var cuSeqlens: [Int32] { lengths.reduce(into: [Int32(0)]) { $0.append($0.last! + Int32($1)) } }

    /// The gradients `backward` returns, as flat fp64 arrays in the op's layouts.
    public struct Gradients: Sendable {
        /// dq, dk [T, H, Dk]; dv [T, H, Dv]; dbeta, dlogDecay [T, H]; dInitial [N, H, Dk, Dv].
        public var dq: [Double], dk: [Double], dv: [Double], dbeta: [Double], dlogDecay: [Double], dInitial: [Double]
    }

    struct Step {
        let row: Int, h: Int
    }

    /// o [T, H, Dv] and each sequence's final state [N, H, Dk, Dv].
    /// - Parameters:
    ///   - q: q, flat [T, H, Dk].
    ///   - k: k, flat [T, H, Dk].
    ///   - v: v, flat [T, H, Dv].
    ///   - beta: beta, flat [T, H].
    ///   - logDecay: The log-decays [T, H] when gated; nil otherwise.
    ///   - initialState: The states before each sequence, [N, H, Dk, Dv]; nil means zeros.
    /// - Returns: o and the final states.
    public func forward(q: [Float], k: [Float], v: [Float], beta: [Float], logDecay: [Float]?,
                        initialState: [Float]?) -> (o: [Double], final: [Double]) {
        let rows = lengths.reduce(0, +)
        var o = [Double](repeating: 0, count: rows * heads * dv)
        var final = [Double](repeating: 0, count: lengths.count * heads * dk * dv)
        var start = 0
        for (n, length) in lengths.enumerated() {
            for h in 0..<heads {
                var s = initial(initialState, n, h)
                for t in start..<(start + length) {
                    step(&s, q: q, k: k, v: v, beta: beta, logDecay: logDecay, row: t, h: h)
                    for j in 0..<dv {
                        var acc = 0.0
                        for i in 0..<dk { acc += Double(q[(t * heads + h) * dk + i]) * s[i * dv + j] }
                        o[(t * heads + h) * dv + j] = acc
                    }
                }
                for e in 0..<(dk * dv) { final[(n * heads + h) * dk * dv + e] = s[e] }
            }
            start += length
        }
        return (o, final)
    }

    func initial(_ state: [Float]?, _ n: Int, _ h: Int) -> [Double] {
        (0..<(dk * dv)).map { e in state.map { Double($0[(n * heads + h) * dk * dv + e]) } ?? 0 }
    }

    func decay(_ logDecay: [Float]?, _ row: Int, _ h: Int) -> Double {
        gated ? exp(Double(logDecay?[row * heads + h] ?? 0)) : 1
    }

    /// One step: s = a s; w = beta (v - s^T k); s += k w^T.
    func step(_ s: inout [Double], q: [Float], k: [Float], v: [Float], beta: [Float], logDecay: [Float]?, row: Int, h: Int) {
        let a = decay(logDecay, row, h), b = Double(beta[row * heads + h])
        for e in s.indices { s[e] *= a }
        let kr = (0..<dk).map { Double(k[(row * heads + h) * dk + $0]) }
        for j in 0..<dv {
            var sk = 0.0
            for i in 0..<dk { sk += s[i * dv + j] * kr[i] }
            let w = b * (Double(v[(row * heads + h) * dv + j]) - sk)
            for i in 0..<dk { s[i * dv + j] += kr[i] * w }
        }
    }

    /// The gradients of every input from dO (and the final states' gradient), by the adjoint
    /// of each step in reverse.
    /// - Parameters:
    ///   - q: q, flat [T, H, Dk].
    ///   - k: k, flat [T, H, Dk].
    ///   - v: v, flat [T, H, Dv].
    ///   - beta: beta, flat [T, H].
    ///   - logDecay: The log-decays [T, H] when gated; nil otherwise.
    ///   - initialState: The states before each sequence; nil means zeros.
    ///   - dO: The gradient of o, [T, H, Dv].
    ///   - dFinal: The gradient of the final states, [N, H, Dk, Dv]; nil means zeros.
    /// - Returns: dq, dk, dv, dbeta, dlogDecay (zeros ungated) and the initial states' gradient.
    public func backward(q: [Float], k: [Float], v: [Float], beta: [Float], logDecay: [Float]?, initialState: [Float]?,
                         dO: [Float], dFinal: [Float]?) -> Gradients {
        let rows = lengths.reduce(0, +)
        var g = Gradients(dq: .init(repeating: 0, count: rows * heads * dk), dk: .init(repeating: 0, count: rows * heads * dk),
                          dv: .init(repeating: 0, count: rows * heads * dv), dbeta: .init(repeating: 0, count: rows * heads),
                          dlogDecay: .init(repeating: 0, count: rows * heads),
                          dInitial: .init(repeating: 0, count: lengths.count * heads * dk * dv))
        let segment = 64
        var start = 0
        for (n, length) in lengths.enumerated() {
            for h in 0..<heads {
                // Checkpoints: the state before every segment.
                var checkpoints: [[Double]] = []
                var s = initial(initialState, n, h)
                for t in 0..<length {
                    if t % segment == 0 { checkpoints.append(s) }
                    step(&s, q: q, k: k, v: v, beta: beta, logDecay: logDecay, row: start + t, h: h)
                }
                var ds = initial(dFinal, n, h)
                for seg in stride(from: checkpoints.count - 1, through: 0, by: -1) {
                    let first = seg * segment, end = min(length, first + segment)
                    var before: [[Double]] = []
                    var cur = checkpoints[seg]
                    for t in first..<end {
                        before.append(cur)
                        step(&cur, q: q, k: k, v: v, beta: beta, logDecay: logDecay, row: start + t, h: h)
                    }
                    for t in stride(from: end - 1, through: first, by: -1) {
                        adjoint(&ds, &g, before: before[t - first], q: q, k: k, v: v, beta: beta, logDecay: logDecay, dO: dO,
                                row: start + t, h: h)
                    }
                }
                for e in 0..<(dk * dv) { g.dInitial[(n * heads + h) * dk * dv + e] = ds[e] }
            }
            start += length
        }
        return g
    }

    /// The adjoint of one step, from the state before it: accumulates the gradients of the
    /// step's inputs and turns ds (the gradient of the state after) into the gradient before.
    func adjoint(_ ds: inout [Double], _ g: inout Gradients, before: [Double], q: [Float], k: [Float], v: [Float], beta: [Float],
                 logDecay: [Float]?, dO: [Float], row: Int, h: Int) {
        let a = decay(logDecay, row, h), b = Double(beta[row * heads + h])
        let kr = (0..<dk).map { Double(k[(row * heads + h) * dk + $0]) }
        let qr = (0..<dk).map { Double(q[(row * heads + h) * dk + $0]) }
        let dor = (0..<dv).map { Double(dO[(row * heads + h) * dv + $0]) }
        let sp = before.map { $0 * a }  // S' = a S_{t-1}
        var w = [Double](repeating: 0, count: dv)
        var after = sp
        for j in 0..<dv {
            var sk = 0.0
            for i in 0..<dk { sk += sp[i * dv + j] * kr[i] }
            w[j] = b * (Double(v[(row * heads + h) * dv + j]) - sk)
            for i in 0..<dk { after[i * dv + j] += kr[i] * w[j] }
        }
        // o = q^T S_t.
        for i in 0..<dk {
            var acc = 0.0
            for j in 0..<dv {
                acc += after[i * dv + j] * dor[j]
                ds[i * dv + j] += qr[i] * dor[j]
            }
            g.dq[(row * heads + h) * dk + i] += acc
        }
        // S_t = S' + k w^T.
        var dw = [Double](repeating: 0, count: dv)
        for i in 0..<dk {
            var acc = 0.0
            for j in 0..<dv {
                acc += ds[i * dv + j] * w[j]
                dw[j] += ds[i * dv + j] * kr[i]
            }
            g.dk[(row * heads + h) * dk + i] += acc
        }
        // w = b (v - S'^T k).
        var dbeta = 0.0
        for j in 0..<dv {
            g.dv[(row * heads + h) * dv + j] += b * dw[j]
            dbeta += dw[j] * (b == 0 ? Double(v[(row * heads + h) * dv + j]) - spk(sp, kr, j) : w[j] / b)
        }
        g.dbeta[row * heads + h] += dbeta
        for i in 0..<dk {
            var acc = 0.0
            for j in 0..<dv {
                acc += sp[i * dv + j] * dw[j]
                ds[i * dv + j] -= b * kr[i] * dw[j]
            }
            g.dk[(row * heads + h) * dk + i] -= b * acc
        }
        // S' = a S_{t-1}.
        var da = 0.0
        for e in ds.indices {
            da += before[e] * ds[e]
            ds[e] *= a
        }
        if gated { g.dlogDecay[row * heads + h] += a * da }
    }

    func spk(_ sp: [Double], _ kr: [Double], _ j: Int) -> Double {
        var acc = 0.0
        for i in 0..<dk { acc += sp[i * dv + j] * kr[i] }
        return acc
    }
}
