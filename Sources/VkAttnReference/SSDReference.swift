import VkAttn
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sequential fp64 reference of `MambaSSD`, the recurrence step by step, forward and backward
/// (reverse mode through the recurrence, every state kept), shared by the tests and
/// `vkattn-bench --check`. Flat arrays in the op's layouts: x, y [B, L, H, P]; dt [B, L, H];
/// B, C [B, L, G, N]; A, D, dt bias [H]; states [B, H, N, P].
///
/// `absolute`: every input (x, B, C, D, the states, dy, dFinal, and A where it multiplies a
/// gradient) is taken by its absolute value, so every sum adds magnitudes: the scale a
/// rounding error of any evaluation order is proportional to (the decays keep their values).
public struct SSDReference: Sendable {
    /// B, L, H, P, G, N.
    public let batch: Int, length: Int, heads: Int, headDim: Int, groups: Int, stateDim: Int
    /// dt_eff = softplus(dt + bias) instead of dt + bias.
    public let dtSoftplus: Bool

    /// - Parameters:
    ///   - batch: B.
    ///   - length: L.
    ///   - heads: H.
    ///   - headDim: P.
    ///   - groups: G (divides H).
    ///   - stateDim: N.
    ///   - dtSoftplus: Softplus on dt (+ bias).
    public init(batch: Int, length: Int, heads: Int, headDim: Int, groups: Int, stateDim: Int, dtSoftplus: Bool = false) {
        (self.batch, self.length, self.heads, self.headDim, self.groups, self.stateDim, self.dtSoftplus) =
            (batch, length, heads, headDim, groups, stateDim, dtSoftplus)
    }

    /// The inputs of one call.
    public struct Inputs: Sendable {
        /// x, dt, A, B, C, D (nil: none), dt bias (nil: none), initial states (nil: zeros).
        public var x: [Float], dt: [Float], a: [Float], b: [Float], c: [Float], d: [Float]?, dtBias: [Float]?, initialState: [Float]?
        /// The output gate z [B, L, H, P] (y times silu(z)); nil: none.
        public var z: [Float]?

        /// - Parameters:
        ///   - x: [B, L, H, P].
        ///   - dt: [B, L, H].
        ///   - a: [H].
        ///   - b: [B, L, G, N].
        ///   - c: [B, L, G, N].
        ///   - d: [H] or nil.
        ///   - dtBias: [H] or nil.
        ///   - initialState: [B, H, N, P] or nil.
        ///   - z: [B, L, H, P] or nil.
        public init(x: [Float], dt: [Float], a: [Float], b: [Float], c: [Float], d: [Float]? = nil, dtBias: [Float]? = nil, initialState: [Float]? = nil,
                    z: [Float]? = nil) {
            (self.x, self.dt, self.a, self.b, self.c, self.d, self.dtBias, self.initialState, self.z) = (x, dt, a, b, c, d, dtBias, initialState, z)
        }
    }

    /// The gradients of one call.
    public struct Gradients: Sendable {
        /// dx, ddt, dA, dB, dC, dD, d(dt bias), d(initial states), dz (each all zeros when unused).
        public var dx: [Double], ddt: [Double], da: [Double], db: [Double], dc: [Double], dd: [Double], dDtBias: [Double], dInitial: [Double]
        /// dz (empty without z).
        public var dz: [Double] = []
    }

    func xi(_ b: Int, _ t: Int, _ h: Int, _ p: Int) -> Int { ((b * length + t) * heads + h) * headDim + p }
    func bi(_ b: Int, _ t: Int, _ g: Int, _ n: Int) -> Int { ((b * length + t) * groups + g) * stateDim + n }
    func group(_ h: Int) -> Int { h / (heads / groups) }
    func raw(_ inp: Inputs, _ b: Int, _ t: Int, _ h: Int) -> Double { Double(inp.dt[(b * length + t) * heads + h]) + (inp.dtBias.map { Double($0[h]) } ?? 0) }
    func dtEff(_ r: Double) -> Double { dtSoftplus ? (r > 20 ? r : log1p(exp(r))) : r }
    /// silu(z) and its derivative (magnitudes with `absolute`). silu'(z) = s (1 + z (1 - s)) is a
    /// sum whose terms cancel near z = -1.28, so its magnitude is that of the terms, s (1 + |z| (1 - s)),
    /// not of the near-zero result (which would make the error scale of dz too small).
    func gate(_ z: [Float]?, _ i: Int, absolute: Bool) -> (silu: Double, slope: Double) {
        guard let z else { return (1, 0) }
        let v = Double(z[i]), s = 1 / (1 + exp(-v))
        let silu = v * s
        return absolute ? (Swift.abs(silu), s * (1 + Swift.abs(v) * (1 - s))) : (silu, s * (1 + v * (1 - s)))
    }

    /// y [B, L, H, P] and the final states [B, H, N, P].
    /// - Parameters:
    ///   - inputs: The call's inputs.
    ///   - absolute: Magnitudes instead of values (see the type's notes).
    /// - Returns: y and the final states.
    public func forward(_ inputs: Inputs, absolute: Bool = false) -> (y: [Double], final: [Double]) {
        let f: (Float) -> Double = { absolute ? Swift.abs(Double($0)) : Double($0) }
        var y = [Double](repeating: 0, count: batch * length * heads * headDim)
        var final = [Double](repeating: 0, count: batch * heads * stateDim * headDim)
        let np = stateDim * headDim
        for b in 0..<batch {
            for h in 0..<heads {
                let g = group(h)
                var s = (0..<np).map { e in inputs.initialState.map { f($0[(b * heads + h) * np + e]) } ?? 0 }
                for t in 0..<length {
                    let dte = dtEff(raw(inputs, b, t, h))
                    let decay = exp(dte * Double(inputs.a[h]))
                    for n in 0..<stateDim {
                        let bn = dte * f(inputs.b[bi(b, t, g, n)])
                        for p in 0..<headDim { s[n * headDim + p] = decay * s[n * headDim + p] + bn * f(inputs.x[xi(b, t, h, p)]) }
                    }
                    for p in 0..<headDim {
                        var acc = inputs.d.map { f($0[h]) * f(inputs.x[xi(b, t, h, p)]) } ?? 0
                        for n in 0..<stateDim { acc += f(inputs.c[bi(b, t, g, n)]) * s[n * headDim + p] }
                        y[xi(b, t, h, p)] = acc * gate(inputs.z, xi(b, t, h, p), absolute: absolute).silu
                    }
                }
                for e in 0..<np { final[(b * heads + h) * np + e] = s[e] }
            }
        }
        return (y, final)
    }

    /// Every gradient, from dy and the final states' gradient (nil: zeros).
    /// - Parameters:
    ///   - inputs: The call's inputs.
    ///   - dy: The gradient of y.
    ///   - dFinal: The gradient of the final states; nil means zeros.
    ///   - absolute: Magnitudes instead of values (see the type's notes).
    /// - Returns: The gradients.
    public func backward(_ inputs: Inputs, dy: [Float], dFinal: [Float]?, absolute: Bool = false) -> Gradients {
        let f: (Float) -> Double = { absolute ? Swift.abs(Double($0)) : Double($0) }
        let np = stateDim * headDim
        var out = Gradients(dx: .init(repeating: 0, count: inputs.x.count), ddt: .init(repeating: 0, count: inputs.dt.count),
                            da: .init(repeating: 0, count: heads), db: .init(repeating: 0, count: inputs.b.count),
                            dc: .init(repeating: 0, count: inputs.c.count), dd: .init(repeating: 0, count: heads),
                            dDtBias: .init(repeating: 0, count: heads), dInitial: .init(repeating: 0, count: batch * heads * np))
        if inputs.z != nil { out.dz = .init(repeating: 0, count: inputs.x.count) }
        for b in 0..<batch {
            for h in 0..<heads {
                let g = group(h)
                // States S_{-1} ... S_{L-1}.
                var states: [[Double]] = [(0..<np).map { e in inputs.initialState.map { f($0[(b * heads + h) * np + e]) } ?? 0 }]
                for t in 0..<length {
                    let dte = dtEff(raw(inputs, b, t, h))
                    let decay = exp(dte * Double(inputs.a[h]))
                    var s = states[t]
                    for n in 0..<stateDim {
                        let bn = dte * f(inputs.b[bi(b, t, g, n)])
                        for p in 0..<headDim { s[n * headDim + p] = decay * s[n * headDim + p] + bn * f(inputs.x[xi(b, t, h, p)]) }
                    }
                    states.append(s)
                }
                var grad = (0..<np).map { e in dFinal.map { f($0[(b * heads + h) * np + e]) } ?? 0 }
                for t in stride(from: length - 1, through: 0, by: -1) {
                    let r = raw(inputs, b, t, h)
                    let dte = dtEff(r)
                    let decay = exp(dte * Double(inputs.a[h]))
                    let s = states[t + 1], prev = states[t]
                    for p in 0..<headDim {
                        let xv = f(inputs.x[xi(b, t, h, p)])
                        var gy = f(dy[xi(b, t, h, p)])
                        if inputs.z != nil {
                            // y = y_pre silu(z): dz = dy y_pre silu'(z), and y_pre's gradient dy silu(z).
                            var pre = inputs.d.map { f($0[h]) * xv } ?? 0
                            for n in 0..<stateDim { pre += f(inputs.c[bi(b, t, g, n)]) * s[n * headDim + p] }
                            let (silu, slope) = gate(inputs.z, xi(b, t, h, p), absolute: absolute)
                            out.dz[xi(b, t, h, p)] = gy * pre * slope
                            gy *= silu
                        }
                        if let d = inputs.d {
                            out.dx[xi(b, t, h, p)] += f(d[h]) * gy
                            out.dd[h] += gy * xv
                        }
                        for n in 0..<stateDim {
                            grad[n * headDim + p] += f(inputs.c[bi(b, t, g, n)]) * gy
                            out.dc[bi(b, t, g, n)] += gy * s[n * headDim + p]
                        }
                    }
                    // S_t = decay S_{t-1} + dte B^T x.
                    var dDecay = 0.0, dDte = 0.0
                    for n in 0..<stateDim {
                        let bv = f(inputs.b[bi(b, t, g, n)])
                        var gx = 0.0
                        for p in 0..<headDim {
                            let gs = grad[n * headDim + p]
                            let xv = f(inputs.x[xi(b, t, h, p)])
                            dDecay += gs * prev[n * headDim + p]
                            gx += gs * xv
                            out.dx[xi(b, t, h, p)] += dte * gs * bv
                        }
                        dDte += gx * bv
                        out.db[bi(b, t, g, n)] += dte * gx
                    }
                    let aTerm = absolute ? Swift.abs(Double(inputs.a[h])) : Double(inputs.a[h])
                    dDte += dDecay * decay * aTerm
                    out.da[h] += dDecay * decay * dte
                    let dRaw = dtSoftplus ? dDte / (1 + exp(-r)) : dDte
                    out.ddt[(b * length + t) * heads + h] = dRaw
                    out.dDtBias[h] += dRaw
                    for e in 0..<np { grad[e] *= decay }
                }
                for e in 0..<np { out.dInitial[(b * heads + h) * np + e] = grad[e] }
            }
        }
        return out
    }
}

extension SSDReference {
    /// Packed sequences: each sequence of `cuSeqlens` run on its own (batch 1, length T in
    /// `self`; states [N_seq, H, N, P]).
    func sequence(_ inputs: Inputs, _ cu: [Int32], _ s: Int) -> (SSDReference, Inputs) {
        let (a0, e) = (Int(cu[s]), Int(cu[s + 1]))
        let np = heads * stateDim * headDim
        let ref = SSDReference(batch: 1, length: e - a0, heads: heads, headDim: headDim, groups: groups, stateDim: stateDim, dtSoftplus: dtSoftplus)
        let rows = { (x: [Float], w: Int) in Array(x[(a0 * w)..<(e * w)]) }
        let inp = Inputs(x: rows(inputs.x, heads * headDim), dt: rows(inputs.dt, heads), a: inputs.a, b: rows(inputs.b, groups * stateDim),
                         c: rows(inputs.c, groups * stateDim), d: inputs.d, dtBias: inputs.dtBias,
                         initialState: inputs.initialState.map { Array($0[(s * np)..<((s + 1) * np)]) },
                         z: inputs.z.map { rows($0, heads * headDim) })
        return (ref, inp)
    }

    /// The packed forward: y (packed) and the final states [N_seq, H, N, P].
    /// - Parameters:
    ///   - inputs: Packed inputs (batch 1), per-sequence initial states.
    ///   - cuSeqlens: N_seq + 1 token offsets.
    ///   - absolute: Magnitudes instead of values.
    /// - Returns: y and the final states.
    public func packedForward(_ inputs: Inputs, cuSeqlens: [Int32], absolute: Bool = false) -> (y: [Double], final: [Double]) {
        var y: [Double] = [], final: [Double] = []
        for s in 0..<(cuSeqlens.count - 1) {
            let (ref, inp) = sequence(inputs, cuSeqlens, s)
            let r = ref.forward(inp, absolute: absolute)
            y += r.y
            final += r.final
        }
        return (y, final)
    }

    /// The packed backward (dA, dD and the dt bias gradient summed over sequences).
    /// - Parameters:
    ///   - inputs: Packed inputs (batch 1), per-sequence initial states.
    ///   - cuSeqlens: N_seq + 1 token offsets.
    ///   - dy: The gradient of y, packed.
    ///   - dFinal: The gradient of the final states [N_seq, H, N, P]; nil means zeros.
    ///   - absolute: Magnitudes instead of values.
    /// - Returns: The gradients (per-sequence initial-state gradients).
    public func packedBackward(_ inputs: Inputs, cuSeqlens: [Int32], dy: [Float], dFinal: [Float]?, absolute: Bool = false) -> Gradients {
        var out = Gradients(dx: [], ddt: [], da: .init(repeating: 0, count: heads), db: [], dc: [], dd: .init(repeating: 0, count: heads),
                            dDtBias: .init(repeating: 0, count: heads), dInitial: [])
        let np = heads * stateDim * headDim
        for s in 0..<(cuSeqlens.count - 1) {
            let (ref, inp) = sequence(inputs, cuSeqlens, s)
            let (a0, e) = (Int(cuSeqlens[s]), Int(cuSeqlens[s + 1]))
            let r = ref.backward(inp, dy: Array(dy[(a0 * heads * headDim)..<(e * heads * headDim)]),
                                 dFinal: dFinal.map { Array($0[(s * np)..<((s + 1) * np)]) }, absolute: absolute)
            out.dx += r.dx
            out.ddt += r.ddt
            out.db += r.db
            out.dc += r.dc
            out.dInitial += r.dInitial
            out.dz += r.dz
            for h in 0..<heads {
                out.da[h] += r.da[h]
                out.dd[h] += r.dd[h]
                out.dDtBias[h] += r.dDtBias[h]
            }
        }
        return out
    }
}
