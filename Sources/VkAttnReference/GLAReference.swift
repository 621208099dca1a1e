import VkAttn
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sequential fp64 reference of `GatedLinearAttention`, the recurrent form step by step
/// (S_t = diag(g_t) S_{t-1} + k_t^T v_t, o_t = q_t S_t), forward and backward, shared by the
/// tests and `vkattn-bench --check`. Flat arrays in the op's layouts: q, k, per-key log-gates
/// [B, L, H, Dk]; v, o [B, L, H, Dv]; per-head log-gates [B, L, H]; states [B, H, Dk, Dv].
public struct GLAReference: Sendable {
    /// The gates' form.
    public let gating: GatedLinearAttention.Gating
    /// B, L, H, Dk and Dv.
    public let batch: Int, length: Int, heads: Int, dk: Int, dv: Int

    /// - Parameters:
    ///   - gating: The gates' form.
    ///   - batch: B.
    ///   - length: L.
    ///   - heads: H.
    ///   - dk: Dk.
    ///   - dv: Dv.
    public init(gating: GatedLinearAttention.Gating, batch: Int, length: Int, heads: Int, dk: Int, dv: Int) {
        self.gating = gating
        self.batch = batch
        self.length = length
        self.heads = heads
        self.dk = dk
        self.dv = dv
    }

    func qk(_ b: Int, _ t: Int, _ h: Int, _ i: Int) -> Int { ((b * length + t) * heads + h) * dk + i }
    func vo(_ b: Int, _ t: Int, _ h: Int, _ j: Int) -> Int { ((b * length + t) * heads + h) * dv + j }

    /// exp(log-gate) of key dimension i at (b, t, h).
    func gate(_ g: [Float]?, _ b: Int, _ t: Int, _ h: Int, _ i: Int) -> Double {
        guard let g else { return 1 }
        switch gating {
        case .none: return 1
        case .perHead: return exp(Double(g[(b * length + t) * heads + h]))
        case .perKey: return exp(Double(g[qk(b, t, h, i)]))
        }
    }

    /// o, the final state, and the state before every chunk of `chunkLength` rows followed by
    /// the final state ([B, H, chunks + 1, Dk, Dv]) when `chunkLength` is given.
    /// - Parameters:
    ///   - q: q, flat [B, L, H, Dk].
    ///   - k: k, flat [B, L, H, Dk].
    ///   - v: v, flat [B, L, H, Dv].
    ///   - logGates: The log-gates in the gating's shape; nil for `.none`.
    ///   - initialState: S before step 0, [B, H, Dk, Dv]; nil means zeros.
    ///   - chunkLength: Rows per chunk for the boundary states; nil skips them.
    /// - Returns: o [B, L, H, Dv], the final state [B, H, Dk, Dv], and the boundary states (empty
    ///   without `chunkLength`).
    public func forward(q: [Float], k: [Float], v: [Float], logGates: [Float]?, initialState: [Float]?,
                        chunkLength: Int? = nil) -> (o: [Double], final: [Double], boundaries: [Double]) {
        var o = [Double](repeating: 0, count: batch * length * heads * dv)
        var final = [Double](repeating: 0, count: batch * heads * dk * dv)
        let chunks = chunkLength.map { (length + $0 - 1) / $0 } ?? 0
        var boundaries = [Double](repeating: 0, count: chunkLength == nil ? 0 : batch * heads * (chunks + 1) * dk * dv)
        for b in 0..<batch {
            for h in 0..<heads {
                let base = (b * heads + h) * dk * dv
                var s = (0..<(dk * dv)).map { e in initialState.map { Double($0[base + e]) } ?? 0 }
                func record(_ slot: Int) {
                    let at = ((b * heads + h) * (chunks + 1) + slot) * dk * dv
                    for e in 0..<(dk * dv) { boundaries[at + e] = s[e] }
                }
                for t in 0..<length {
                    if let c = chunkLength, t % c == 0 { record(t / c) }
                    for i in 0..<dk {
                        let g = gate(logGates, b, t, h, i)
                        let ki = Double(k[qk(b, t, h, i)])
                        for j in 0..<dv { s[i * dv + j] = g * s[i * dv + j] + ki * Double(v[vo(b, t, h, j)]) }
                    }
                    for j in 0..<dv {
                        var acc = 0.0
                        for i in 0..<dk { acc += Double(q[qk(b, t, h, i)]) * s[i * dv + j] }
                        o[vo(b, t, h, j)] = acc
                    }
                }
                if chunkLength != nil { record(chunks) }
                for e in 0..<(dk * dv) { final[base + e] = s[e] }
            }
        }
        return (o, final, boundaries)
    }

    /// Gradients of L = sum(o * dO) + sum(S_final * dFinal): dq, dk, dv, d(log-gates) (empty
    /// for `.none`), d(initial state).
    /// - Parameters:
    ///   - q: q, flat.
    ///   - k: k, flat.
    ///   - v: v, flat.
    ///   - logGates: The log-gates; nil for `.none`.
    ///   - initialState: S before step 0; nil means zeros.
    ///   - dO: The gradient of o, [B, L, H, Dv].
    ///   - dFinal: The gradient of the final state; nil means zeros.
    /// - Returns: dq, dk, dv, d(log-gates) and d(initial state), flat.
    public func backward(q: [Float], k: [Float], v: [Float], logGates: [Float]?, initialState: [Float]?,
                         dO: [Float], dFinal: [Float]?)
        -> (dq: [Double], dk: [Double], dv: [Double], dLogGates: [Double], dInitial: [Double]) {
        var dq = [Double](repeating: 0, count: q.count)
        var dkOut = [Double](repeating: 0, count: k.count)
        var dvOut = [Double](repeating: 0, count: v.count)
        let gateCount = gating == .none ? 0 : (gating == .perHead ? batch * length * heads : batch * length * heads * dk)
        var dg = [Double](repeating: 0, count: gateCount)
        var dInitial = [Double](repeating: 0, count: batch * heads * dk * dv)
        for b in 0..<batch {
            for h in 0..<heads {
                let base = (b * heads + h) * dk * dv
                // Every state S_t (t = -1 ... L - 1), forward.
                var states = [[Double]]()
                var s = (0..<(dk * dv)).map { e in initialState.map { Double($0[base + e]) } ?? 0 }
                states.append(s)
                for t in 0..<length {
                    for i in 0..<dk {
                        let g = gate(logGates, b, t, h, i)
                        for j in 0..<dv { s[i * dv + j] = g * s[i * dv + j] + Double(k[qk(b, t, h, i)]) * Double(v[vo(b, t, h, j)]) }
                    }
                    states.append(s)
                }
                // Adjoint, backward: ds = dL/dS_t.
                var ds = (0..<(dk * dv)).map { e in dFinal.map { Double($0[base + e]) } ?? 0 }
                for t in stride(from: length - 1, through: 0, by: -1) {
                    let st = states[t + 1], prev = states[t]
                    for i in 0..<dk {
                        for j in 0..<dv { ds[i * dv + j] += Double(q[qk(b, t, h, i)]) * Double(dO[vo(b, t, h, j)]) }
                    }
                    for i in 0..<dk {
                        var accQ = 0.0, accK = 0.0, accG = 0.0
                        for j in 0..<dv {
                            accQ += Double(dO[vo(b, t, h, j)]) * st[i * dv + j]
                            accK += ds[i * dv + j] * Double(v[vo(b, t, h, j)])
                            accG += ds[i * dv + j] * prev[i * dv + j]
                        }
                        dq[qk(b, t, h, i)] = accQ
                        dkOut[qk(b, t, h, i)] = accK
                        let g = gate(logGates, b, t, h, i)
                        switch gating {
                        case .none: break
                        case .perHead: dg[(b * length + t) * heads + h] += g * accG
                        case .perKey: dg[qk(b, t, h, i)] = g * accG
                        }
                    }
                    for j in 0..<dv {
                        var acc = 0.0
                        for i in 0..<dk { acc += Double(k[qk(b, t, h, i)]) * ds[i * dv + j] }
                        dvOut[vo(b, t, h, j)] = acc
                    }
                    for i in 0..<dk {
                        let g = gate(logGates, b, t, h, i)
                        for j in 0..<dv { ds[i * dv + j] *= g }
                    }
                }
                for e in 0..<(dk * dv) { dInitial[base + e] = ds[e] }
            }
        }
        return (dq, dkOut, dvOut, dg, dInitial)
    }
}

extension GLAReference {
    /// Rows [start, end) of a packed [1, T, ...] array with `width` values per row.
    static func rows(_ x: [Float], _ start: Int, _ end: Int, width: Int) -> [Float] { Array(x[(start * width)..<(end * width)]) }

    /// The packed (variable-length) forward: each sequence of `cuSeqlens` run on its own (no
    /// state crosses a boundary). Tensors are packed with batch 1 (q [1, T, H, Dk], ...);
    /// states are per sequence, [N_seq, H, Dk, Dv].
    /// - Parameters:
    ///   - gating: The gates' form.
    ///   - heads: H.
    ///   - dk: Dk.
    ///   - dv: Dv.
    ///   - cuSeqlens: N_seq + 1 token offsets (0 first, nondecreasing, T last).
    ///   - q: q, flat [1, T, H, Dk].
    ///   - k: k, flat [1, T, H, Dk].
    ///   - v: v, flat [1, T, H, Dv].
    ///   - logGates: The packed log-gates; nil for `.none`.
    ///   - initialState: Per-sequence initial states [N_seq, H, Dk, Dv]; nil means zeros.
    /// - Returns: o [1, T, H, Dv] and the final states [N_seq, H, Dk, Dv].
    public static func packedForward(gating: GatedLinearAttention.Gating, heads: Int, dk: Int, dv: Int, cuSeqlens: [Int32],
                                     q: [Float], k: [Float], v: [Float], logGates: [Float]?, initialState: [Float]?)
        -> (o: [Double], final: [Double]) {
        var o: [Double] = [], final: [Double] = []
        let gw = gating == .perKey ? heads * dk : heads
        let sw = heads * dk * dv
        for n in 0..<(cuSeqlens.count - 1) {
            let (s, e) = (Int(cuSeqlens[n]), Int(cuSeqlens[n + 1]))
            let ref = GLAReference(gating: gating, batch: 1, length: e - s, heads: heads, dk: dk, dv: dv)
            let r = ref.forward(q: rows(q, s, e, width: heads * dk), k: rows(k, s, e, width: heads * dk), v: rows(v, s, e, width: heads * dv),
                                logGates: logGates.map { rows($0, s, e, width: gw) },
                                initialState: initialState.map { rows($0, n, n + 1, width: sw) })
            o += r.o
            final += r.final
        }
        return (o, final)
    }

    /// The packed backward, each sequence on its own (see
    /// ``packedForward(gating:heads:dk:dv:cuSeqlens:q:k:v:logGates:initialState:)``).
    /// - Parameters:
    ///   - gating: The gates' form.
    ///   - heads: H.
    ///   - dk: Dk.
    ///   - dv: Dv.
    ///   - cuSeqlens: N_seq + 1 token offsets.
    ///   - q: q, flat [1, T, H, Dk].
    ///   - k: k, flat [1, T, H, Dk].
    ///   - v: v, flat [1, T, H, Dv].
    ///   - logGates: The packed log-gates; nil for `.none`.
    ///   - initialState: Per-sequence initial states; nil means zeros.
    ///   - dO: The gradient of o, [1, T, H, Dv].
    ///   - dFinal: The gradient of the final states [N_seq, H, Dk, Dv]; nil means zeros.
    /// - Returns: dq, dk, dv, d(log-gates) (packed) and d(initial states) [N_seq, H, Dk, Dv].
    public static func packedBackward(gating: GatedLinearAttention.Gating, heads: Int, dk: Int, dv: Int, cuSeqlens: [Int32],
                                      q: [Float], k: [Float], v: [Float], logGates: [Float]?, initialState: [Float]?,
                                      dO: [Float], dFinal: [Float]?)
        -> (dq: [Double], dk: [Double], dv: [Double], dLogGates: [Double], dInitial: [Double]) {
        var out: (dq: [Double], dk: [Double], dv: [Double], dLogGates: [Double], dInitial: [Double]) = ([], [], [], [], [])
        let gw = gating == .perKey ? heads * dk : heads
        let sw = heads * dk * dv
        for n in 0..<(cuSeqlens.count - 1) {
            let (s, e) = (Int(cuSeqlens[n]), Int(cuSeqlens[n + 1]))
            let ref = GLAReference(gating: gating, batch: 1, length: e - s, heads: heads, dk: dk, dv: dv)
            let r = ref.backward(q: rows(q, s, e, width: heads * dk), k: rows(k, s, e, width: heads * dk), v: rows(v, s, e, width: heads * dv),
                                 logGates: logGates.map { rows($0, s, e, width: gw) },
                                 initialState: initialState.map { rows($0, n, n + 1, width: sw) },
                                 dO: rows(dO, s, e, width: heads * dv), dFinal: dFinal.map { rows($0, n, n + 1, width: sw) })
            out.dq += r.dq
            out.dk += r.dk
            out.dv += r.dv
            out.dLogGates += r.dLogGates
            out.dInitial += r.dInitial
        }
        return out
    }
}
