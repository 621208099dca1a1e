import VkAttn
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sequential fp64 reference of `SelectiveScan` (Mamba-1's selective scan), step by step,
/// forward and backward (the adjoint recursion derived by hand), shared by the tests and
/// `vkattn-bench mamba --check`. Flat arrays over the flat rows of every sequence: x, delta,
/// z, out [T, Dch]; A [Dch, N]; B, C [T, N]; D, deltaBias [Dch]; states [S, Dch, N]. The
/// sequences are `cuSeqlens` (S + 1 boundaries over the T rows; a dense batch of B rows of L
/// is 0, L, 2L, ...).
///
/// With `absolute`, every sum adds the absolute values of its terms (gates, skips and
/// derivatives taken by absolute value, decays as they are): the scale against which the
/// op's rounding error is bounded.
public struct MambaReference: Sendable {
    /// Dch and N.
    public let channels: Int, state: Int
    /// Softplus on delta (plus its bias).
    public let deltaSoftplus: Bool

    /// - Parameters:
    ///   - channels: Dch.
    ///   - state: N.
    ///   - deltaSoftplus: Softplus on delta (plus its bias).
    public init(channels: Int, state: Int, deltaSoftplus: Bool) {
        self.channels = channels
        self.state = state
        self.deltaSoftplus = deltaSoftplus
    }

    /// The forward's inputs.
    public struct Inputs: Sendable {
        /// x [T, Dch], delta [T, Dch], A [Dch, N], B [T, N], C [T, N].
        public var x: [Float], delta: [Float], A: [Float], B: [Float], C: [Float]
        /// D [Dch], z [T, Dch], deltaBias [Dch], initial states [S, Dch, N]; nil: none.
        public var D: [Float]?, z: [Float]?, deltaBias: [Float]?, initial: [Float]?

        /// - Parameters:
        ///   - x: [T, Dch].
        ///   - delta: [T, Dch].
        ///   - A: [Dch, N].
        ///   - B: [T, N].
        ///   - C: [T, N].
        ///   - D: [Dch] or nil.
        ///   - z: [T, Dch] or nil.
        ///   - deltaBias: [Dch] or nil.
        ///   - initial: [S, Dch, N] or nil.
        public init(x: [Float], delta: [Float], A: [Float], B: [Float], C: [Float], D: [Float]? = nil, z: [Float]? = nil,
                    deltaBias: [Float]? = nil, initial: [Float]? = nil) {
            (self.x, self.delta, self.A, self.B, self.C) = (x, delta, A, B, C)
            (self.D, self.z, self.deltaBias, self.initial) = (D, z, deltaBias, initial)
        }
    }

    /// The backward's results.
    public struct Gradients: Sendable {
        /// Gradients in the inputs' shapes (dD, dz, dDeltaBias zero-length without the input).
        public var dx: [Double], dDelta: [Double], dA: [Double], dB: [Double], dC: [Double]
        /// See above.
        public var dD: [Double], dz: [Double], dDeltaBias: [Double], dInitial: [Double]
    }

    static func softplus(_ v: Double) -> Double { v > 20 ? v : log1p(exp(v)) }
    static func sigmoid(_ v: Double) -> Double { 1 / (1 + exp(-v)) }

    func step(_ inp: Inputs, _ row: Int, _ d: Int) -> (dt: Double, dRaw: Double) {
        let raw = Double(inp.delta[row * channels + d]) + (inp.deltaBias.map { Double($0[d]) } ?? 0)
        return deltaSoftplus ? (Self.softplus(raw), raw > 20 ? 1 : Self.sigmoid(raw)) : (raw, 1)
    }

    /// out [T, Dch] and the final states [S, Dch, N].
    /// - Parameters:
    ///   - inputs: The inputs.
    ///   - cuSeqlens: S + 1 row boundaries.
    ///   - absolute: Sums of absolute terms (the error scale).
    /// - Returns: out and the final states.
    public func forward(_ inputs: Inputs, cuSeqlens: [Int], absolute: Bool = false) -> (out: [Double], final: [Double]) {
        let f: (Double) -> Double = absolute ? { Swift.abs($0) } : { $0 }
        let T = inputs.x.count / max(channels, 1)
        let (Dc, N) = (channels, state)
        var out = [Double](repeating: 0, count: T * Dc)
        let S = cuSeqlens.count - 1
        var final = [Double](repeating: 0, count: S * Dc * N)
        for s in 0..<S {
            for d in 0..<Dc {
                var h = (0..<N).map { n in f(inputs.initial.map { Double($0[(s * Dc + d) * N + n]) } ?? 0) }
                for row in cuSeqlens[s]..<cuSeqlens[s + 1] {
                    let (dt, _) = step(inputs, row, d)
                    let xv = Double(inputs.x[row * Dc + d])
                    var y = 0.0
                    for n in 0..<N {
                        let a = exp(dt * Double(inputs.A[d * N + n]))
                        h[n] = a * h[n] + f(dt * Double(inputs.B[row * N + n]) * xv)
                        y += f(Double(inputs.C[row * N + n]) * h[n])
                    }
                    if let D = inputs.D { y += f(Double(D[d]) * xv) }
                    if let z = inputs.z { let zv = Double(z[row * Dc + d]); y *= f(zv * Self.sigmoid(zv)) }
                    out[row * Dc + d] = y
                }
                for n in 0..<N { final[(s * Dc + d) * N + n] = h[n] }
            }
        }
        return (out, final)
    }

    /// The gradients of the loss sum(out * dOut) + sum(final * dFinal).
    /// - Parameters:
    ///   - inputs: The forward's inputs.
    ///   - cuSeqlens: S + 1 row boundaries.
    ///   - dOut: [T, Dch].
    ///   - dFinal: [S, Dch, N]; nil means zeros.
    ///   - absolute: Sums of absolute terms (the error scale).
    /// - Returns: Every gradient.
    public func backward(_ inputs: Inputs, cuSeqlens: [Int], dOut: [Float], dFinal: [Float]?, absolute: Bool = false) -> Gradients {
        let f: (Double) -> Double = absolute ? { Swift.abs($0) } : { $0 }
        let T = inputs.x.count / max(channels, 1)
        let (Dc, N) = (channels, state)
        let S = cuSeqlens.count - 1
        var g = Gradients(dx: .init(repeating: 0, count: T * Dc), dDelta: .init(repeating: 0, count: T * Dc),
                          dA: .init(repeating: 0, count: Dc * N), dB: .init(repeating: 0, count: T * N),
                          dC: .init(repeating: 0, count: T * N), dD: .init(repeating: 0, count: inputs.D == nil ? 0 : Dc),
                          dz: .init(repeating: 0, count: inputs.z == nil ? 0 : T * Dc),
                          dDeltaBias: .init(repeating: 0, count: inputs.deltaBias == nil ? 0 : Dc),
                          dInitial: .init(repeating: 0, count: S * Dc * N))
        for s in 0..<S {
            let (lo, hi) = (cuSeqlens[s], cuSeqlens[s + 1])
            for d in 0..<Dc {
                // Forward states of this channel, kept: hs[(row - lo) * N + n]; h before lo.
                let h0 = (0..<N).map { n in f(inputs.initial.map { Double($0[(s * Dc + d) * N + n]) } ?? 0) }
                var hs = [Double](repeating: 0, count: (hi - lo) * N)
                var h = h0
                var ys = [Double](repeating: 0, count: hi - lo)
                for row in lo..<hi {
                    let (dt, _) = step(inputs, row, d)
                    let xv = Double(inputs.x[row * Dc + d])
                    var y = 0.0
                    for n in 0..<N {
                        h[n] = exp(dt * Double(inputs.A[d * N + n])) * h[n] + f(dt * Double(inputs.B[row * N + n]) * xv)
                        hs[(row - lo) * N + n] = h[n]
                        y += f(Double(inputs.C[row * N + n]) * h[n])
                    }
                    if let D = inputs.D { y += f(Double(D[d]) * xv) }
                    ys[row - lo] = y
                }
                // Adjoint: next[n] = a_{t+1} g_{t+1} (dFinal past the end).
                var next = (0..<N).map { n in f(dFinal.map { Double($0[(s * Dc + d) * N + n]) } ?? 0) }
                for row in stride(from: hi - 1, through: lo, by: -1) {
                    let (dt, dRaw) = step(inputs, row, d)
                    let e = row * Dc + d
                    let xv = Double(inputs.x[e]), dov = Double(dOut[e])
                    var gate = 1.0
                    if let z = inputs.z {
                        let zv = Double(z[e]), sg = Self.sigmoid(zv)
                        gate = f(zv * sg)
                        // silu'(z) = s (1 + z (1 - s)): the scale adds |z| (1 - s), whose
                        // cancellation near z = -1.28 the device's fp32 cannot avoid.
                        g.dz[e] = f(dov * ys[row - lo]) * sg * (1 + (absolute ? Swift.abs(zv) : zv) * (1 - sg))
                    }
                    let dy = f(dov * gate)
                    var dx = 0.0, ddt = 0.0
                    for n in 0..<N {
                        let An = Double(inputs.A[d * N + n])
                        let a = exp(dt * An)
                        let b = Double(inputs.B[row * N + n]), c = Double(inputs.C[row * N + n])
                        let gt = next[n] + f(c * dy)
                        let hp = row > lo ? hs[(row - lo - 1) * N + n] : h0[n]
                        g.dA[d * N + n] += f(gt * a * hp * dt)
                        dx += f(gt * dt * b)
                        ddt += f(gt * An * a * hp) + f(gt * b * xv)
                        g.dB[row * N + n] += f(gt * dt * xv)
                        g.dC[row * N + n] += f(dy * hs[(row - lo) * N + n])
                        next[n] = a * gt
                    }
                    if let D = inputs.D {
                        dx += f(Double(D[d]) * dy)
                        g.dD[d] += f(dy * xv)
                    }
                    g.dx[e] = dx
                    g.dDelta[e] = ddt * dRaw
                    if inputs.deltaBias != nil { g.dDeltaBias[d] += ddt * dRaw }
                }
                for n in 0..<N { g.dInitial[(s * Dc + d) * N + n] = next[n] }
            }
        }
        return g
    }
}
