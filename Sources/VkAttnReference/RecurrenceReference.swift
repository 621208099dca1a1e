import VkAttn
/// Sequential fp64 references for `LinearRecurrence` (forward and backward), shared by the
/// tests and `vkattn-bench --check`. Arrays are flat in the op's layout ([B, L, D] or
/// [B, D, L], complex values as interleaved (re, im)); states are [B, D] (interleaved).
public struct RecurrenceReference: Sendable {
    /// BLD or BDL.
    public let layout: LinearRecurrence.Layout
    /// Complex values (interleaved re, im).
    public let complex: Bool
    /// Time runs from L - 1 down to 0.
    public let reverse: Bool
    /// B.
    public let batch: Int
    /// L, the time steps.
    public let length: Int
    /// D.
    public let channels: Int

    /// - Parameters:
    ///   - layout: BLD or BDL.
    ///   - complex: Complex values.
    ///   - reverse: Time reversed.
    ///   - batch: B.
    ///   - length: L.
    ///   - channels: D.
    public init(layout: LinearRecurrence.Layout, complex: Bool, reverse: Bool, batch: Int, length: Int, channels: Int) {
        self.layout = layout
        self.complex = complex
        self.reverse = reverse
        self.batch = batch
        self.length = length
        self.channels = channels
    }

    var cw: Int { complex ? 2 : 1 }

    /// Index of the first float of value (b, t, d).
    /// - Parameters:
    ///   - b: The batch entry.
    ///   - t: The time step.
    ///   - d: The channel.
    /// - Returns: The index in the flat array (complex: of the real part).
    public func index(_ b: Int, _ t: Int, _ d: Int) -> Int {
        switch layout {
        case .bld: return ((b * length + t) * channels + d) * cw
        case .bdl: return ((b * channels + d) * length + t) * cw
        }
    }

    /// Time of processing step u.
    func time(_ u: Int, reversed: Bool) -> Int { reversed ? length - 1 - u : u }

    typealias C = (re: Double, im: Double)
    func mul(_ x: C, _ y: C) -> C { (x.re * y.re - x.im * y.im, x.re * y.im + x.im * y.re) }
    func conj(_ x: C) -> C { (x.re, -x.im) }
    func value<T: BinaryFloatingPoint>(_ v: [T], _ i: Int) -> C { (Double(v[i]), complex ? Double(v[i + 1]) : 0) }
    func put(_ v: inout [Double], _ i: Int, _ x: C) {
        v[i] = x.re
        if complex { v[i + 1] = x.im }
    }

    /// h (every state) and the final state.
    /// - Parameters:
    ///   - a: The decays, flat in the layout.
    ///   - b: The inputs, flat.
    ///   - h0: The initial state [B, D] (complex: interleaved); nil means zeros.
    /// - Returns: h, flat in the layout, and the final state.
    public func forward(a: [Float], b: [Float], h0: [Float]?) -> (h: [Double], final: [Double]) {
        var h = [Double](repeating: 0, count: a.count)
        var final = [Double](repeating: 0, count: batch * channels * cw)
        for bi in 0..<batch {
            for d in 0..<channels {
                let s = (bi * channels + d) * cw
                var state: C = h0.map { value($0, s) } ?? (0, 0)
                for u in 0..<length {
                    let i = index(bi, time(u, reversed: reverse), d)
                    let x = mul(value(a, i), state)
                    state = (x.re + value(b, i).re, x.im + value(b, i).im)
                    put(&h, i, state)
                }
                put(&final, s, state)
            }
        }
        return (h, final)
    }

    /// The forward run on |a| and |b| (|.| of each value): at each step, the scale of the
    /// terms a rounding error of the real recurrence can be proportional to.
    /// - Parameters:
    ///   - a: The decays.
    ///   - b: The inputs.
    ///   - h0: The initial state; nil means zeros.
    /// - Returns: One scale per state, h's layout.
    public func magnitude(a: [Float], b: [Float], h0: [Float]?) -> [Double] {
        func absolute(_ v: [Float]) -> [Float] {
            guard complex else { return v.map { abs($0) } }
            var out = v
            for i in stride(from: 0, to: v.count, by: 2) {
                out[i] = (v[i] * v[i] + v[i + 1] * v[i + 1]).squareRoot()
                out[i + 1] = 0
            }
            return out
        }
        var m = forward(a: absolute(a), b: absolute(b), h0: h0.map(absolute)).h
        if complex { for i in stride(from: 0, to: m.count, by: 2) { m[i + 1] = m[i] } }
        return m
    }

    /// The scale of the backward's rounding errors: the gradient recurrence (run the other
    /// way) on |dh| (+ 1e-3) and |a|. The gradient of step t is carried over by the a of the
    /// neighbouring step (t + 1 for a forward recurrence, t - 1 reversed), not by a_t, so each
    /// step takes the largest |a| of t - 1, t and t + 1: a bound for either alignment (with a_t
    /// alone, a small a_t beside a large neighbour under-estimates the scale).
    /// - Parameters:
    ///   - a: The decays.
    ///   - dh: The state gradients.
    ///   - dFinal: The final state's gradient; nil means zeros.
    /// - Returns: One scale per step, h's layout.
    public func gradientMagnitude(a: [Float], dh: [Float], dFinal: [Float]?) -> [Double] {
        var widest = [Float](repeating: 0, count: a.count)
        for bi in 0..<batch {
            for d in 0..<channels {
                for t in 0..<length {
                    var m: Float = 0
                    for u in max(t - 1, 0)...min(t + 1, length - 1) {
                        let i = index(bi, u, d)
                        m = max(m, complex ? (a[i] * a[i] + a[i + 1] * a[i + 1]).squareRoot() : abs(a[i]))
                    }
                    widest[index(bi, t, d)] = m
                }
            }
        }
        let gradient = RecurrenceReference(layout: layout, complex: complex, reverse: !reverse, batch: batch, length: length,
                                           channels: channels)
        return gradient.magnitude(a: widest, b: dh.map { abs($0) + 1e-3 }, h0: dFinal)
    }

    /// Gradients of a real loss through the forward: da, db, dh0 from dh and dFinal, with `h`
    /// the forward's output (PyTorch's convention for complex values).
    /// - Parameters:
    ///   - a: The decays.
    ///   - h: The forward's states.
    ///   - h0: The forward's initial state; nil means zeros.
    ///   - dh: The gradient of every state.
    ///   - dFinal: The final state's gradient; nil means zeros.
    /// - Returns: da and db (a's layout) and dh0 ([B, D]).
    public func backward(a: [Float], h: [Float], h0: [Float]?, dh: [Float], dFinal: [Float]?)
        -> (da: [Double], db: [Double], dh0: [Double]) {
        var da = [Double](repeating: 0, count: a.count)
        var db = [Double](repeating: 0, count: a.count)
        var dh0 = [Double](repeating: 0, count: batch * channels * cw)
        for bi in 0..<batch {
            for d in 0..<channels {
                let s = (bi * channels + d) * cw
                var g: C = dFinal.map { value($0, s) } ?? (0, 0)
                // Forward steps from the last back to the first.
                for u in stride(from: length - 1, through: 0, by: -1) {
                    let i = index(bi, time(u, reversed: reverse), d)
                    if u < length - 1 {
                        let next = index(bi, time(u + 1, reversed: reverse), d)
                        g = mul(conj(value(a, next)), g)
                    }
                    g = (g.re + value(dh, i).re, g.im + value(dh, i).im)
                    put(&db, i, g)
                    let previous: C = u > 0 ? value(h, index(bi, time(u - 1, reversed: reverse), d)) : (h0.map { value($0, s) } ?? (0, 0))
                    put(&da, i, mul(g, conj(previous)))
                }
                put(&dh0, s, mul(conj(value(a, index(bi, time(0, reversed: reverse), d))), g))
            }
        }
        return (da, db, dh0)
    }
}

/// The fp64 reference of a packed (cu_seqlens) recurrence: each sequence run on its own by
/// ``RecurrenceReference``. Arrays are packed with batch 1 in the layout ([1, T, D] or
/// [1, D, T], complex interleaved); states are [N_seq, D].
public struct PackedRecurrenceReference: Sendable {
    /// BLD or BDL.
    public let layout: LinearRecurrence.Layout
    /// Complex values.
    public let complex: Bool
    /// Time reversed within each sequence.
    public let reverse: Bool
    /// D.
    public let channels: Int
    /// N_seq + 1 step offsets.
    public let cuSeqlens: [Int32]

    /// - Parameters:
    ///   - layout: BLD or BDL.
    ///   - complex: Complex values.
    ///   - reverse: Time reversed.
    ///   - channels: D.
    ///   - cuSeqlens: N_seq + 1 step offsets (0 first, nondecreasing, T last).
    public init(layout: LinearRecurrence.Layout, complex: Bool, reverse: Bool, channels: Int, cuSeqlens: [Int32]) {
        self.layout = layout
        self.complex = complex
        self.reverse = reverse
        self.channels = channels
        self.cuSeqlens = cuSeqlens
    }

    var cw: Int { complex ? 2 : 1 }
    var steps: Int { Int(cuSeqlens.last ?? 0) }
    var packedRef: RecurrenceReference { RecurrenceReference(layout: layout, complex: complex, reverse: reverse, batch: 1, length: steps, channels: channels) }

    func sequence(_ n: Int) -> (ref: RecurrenceReference, start: Int) {
        let (s, e) = (Int(cuSeqlens[n]), Int(cuSeqlens[n + 1]))
        return (RecurrenceReference(layout: layout, complex: complex, reverse: reverse, batch: 1, length: e - s, channels: channels), s)
    }

    func gather<T>(_ x: [T], _ n: Int) -> [T] {
        let (ref, s) = sequence(n)
        var out: [T] = []
        for i in 0..<(ref.length * channels) {
            let (t, d) = layout == .bld ? (i / channels, i % channels) : (i % ref.length, i / ref.length)
            let from = packedRef.index(0, s + t, d)
            out += x[from..<(from + cw)]
            _ = ref
        }
        // `out` is in (t, d) order for BLD and (d, t) order for BDL: the sequence's own layout.
        return out
    }

    func scatter(_ y: [Double], _ n: Int, into out: inout [Double]) {
        let (ref, s) = sequence(n)
        for i in 0..<(ref.length * channels) {
            let (t, d) = layout == .bld ? (i / channels, i % channels) : (i % ref.length, i / ref.length)
            let to = packedRef.index(0, s + t, d)
            for k in 0..<cw { out[to + k] = y[i * cw + k] }
        }
    }

    func state<T>(_ x: [T]?, _ n: Int) -> [T]? { x.map { Array($0[(n * channels * cw)..<((n + 1) * channels * cw)]) } }

    /// h and the per-sequence final states.
    /// - Parameters:
    ///   - a: The decays, packed.
    ///   - b: The inputs, packed.
    ///   - h0: The initial states [N_seq, D]; nil means zeros.
    /// - Returns: h (packed) and the final states [N_seq, D].
    public func forward(a: [Float], b: [Float], h0: [Float]?) -> (h: [Double], final: [Double]) {
        var h = [Double](repeating: 0, count: a.count), final: [Double] = []
        for n in 0..<(cuSeqlens.count - 1) {
            let r = sequence(n).ref.forward(a: gather(a, n), b: gather(b, n), h0: state(h0, n))
            scatter(r.h, n, into: &h)
            final += r.final
        }
        return (h, final)
    }

    /// The magnitudes of ``RecurrenceReference/magnitude(a:b:h0:)``, per sequence.
    /// - Parameters:
    ///   - a: The decays, packed.
    ///   - b: The inputs, packed.
    ///   - h0: The initial states; nil means zeros.
    /// - Returns: Packed magnitudes.
    public func magnitude(a: [Float], b: [Float], h0: [Float]?) -> [Double] {
        var m = [Double](repeating: 0, count: a.count)
        for n in 0..<(cuSeqlens.count - 1) { scatter(sequence(n).ref.magnitude(a: gather(a, n), b: gather(b, n), h0: state(h0, n)), n, into: &m) }
        return m
    }

    /// The magnitudes of ``RecurrenceReference/gradientMagnitude(a:dh:dFinal:)``, per sequence.
    /// - Parameters:
    ///   - a: The decays, packed.
    ///   - dh: The gradient of every state, packed.
    ///   - dFinal: The final states' gradients; nil means zeros.
    /// - Returns: Packed magnitudes.
    public func gradientMagnitude(a: [Float], dh: [Float], dFinal: [Float]?) -> [Double] {
        var m = [Double](repeating: 0, count: a.count)
        for n in 0..<(cuSeqlens.count - 1) {
            scatter(sequence(n).ref.gradientMagnitude(a: gather(a, n), dh: gather(dh, n), dFinal: state(dFinal, n)), n, into: &m)
        }
        return m
    }

    /// da, db (packed) and dh0 [N_seq, D].
    /// - Parameters:
    ///   - a: The decays, packed.
    ///   - h: The forward's states, packed.
    ///   - h0: The initial states; nil means zeros.
    ///   - dh: The gradient of every state, packed.
    ///   - dFinal: The final states' gradients; nil means zeros.
    /// - Returns: da, db and dh0.
    public func backward(a: [Float], h: [Float], h0: [Float]?, dh: [Float], dFinal: [Float]?) -> (da: [Double], db: [Double], dh0: [Double]) {
        var da = [Double](repeating: 0, count: a.count), db = da, dh0: [Double] = []
        for n in 0..<(cuSeqlens.count - 1) {
            guard sequence(n).ref.length > 0 else {
                dh0 += state(dFinal, n).map { $0.map(Double.init) } ?? [Double](repeating: 0, count: channels * cw)
                continue
            }
            let r = sequence(n).ref.backward(a: gather(a, n), h: gather(h, n), h0: state(h0, n), dh: gather(dh, n), dFinal: state(dFinal, n))
            scatter(r.da, n, into: &da)
            scatter(r.db, n, into: &db)
            dh0 += r.dh0
        }
        return (da, db, dh0)
    }
}
