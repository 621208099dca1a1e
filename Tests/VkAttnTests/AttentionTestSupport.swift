import Testing
import VkAttn
import TestSupport

/// One random attention problem: host data (rounded to the storage type, so the reference
/// sees exactly what the GPU reads), shapes and layout.
struct AttentionCase: CustomStringConvertible {
    var seed: UInt64
    var qShape: [Int]
    var kShape: [Int]
    /// V's shape: K's with Dv (Dv = Dk unless the case says otherwise).
    var vShape: [Int]
    /// O's (and dO's) shape: Q's with Dv.
    var oShape: [Int] { Array(qShape.dropLast()) + [vShape.last ?? 0] }
    var layout: AttentionLayout = .dense
    var dtype: DType = .f32
    var attention = FlashAttention()
    var q: [Float] = []
    var k: [Float] = []
    var v: [Float] = []
    var dO: [Float] = []

    init(seed: UInt64, batch: Int = 1, sq: Int, sk: Int, headsQ: Int = 2, headsKV: Int? = nil, headDim: Int = 32,
         headDimV: Int? = nil, dtype: DType = .f32, attention: FlashAttention = FlashAttention()) {
        self.init(seed: seed, qShape: [batch, sq, headsQ, headDim], kShape: [batch, sk, headsKV ?? headsQ, headDim],
                  vShape: [batch, sk, headsKV ?? headsQ, headDimV ?? headDim], layout: .dense, dtype: dtype, attention: attention)
    }

    /// Packed variable-length sequences with the given lengths.
    init(seed: UInt64, packedQ: [Int], packedK: [Int], headsQ: Int = 2, headsKV: Int? = nil, headDim: Int = 32,
         headDimV: Int? = nil, dtype: DType = .f32, attention: FlashAttention = FlashAttention()) {
        func cumulative(_ lengths: [Int]) -> [Int32] { lengths.reduce(into: [Int32(0)]) { $0.append($0.last! + Int32($1)) } }
        let cq = cumulative(packedQ), ck = cumulative(packedK)
        self.init(seed: seed, qShape: [Int(cq.last!), headsQ, headDim], kShape: [Int(ck.last!), headsKV ?? headsQ, headDim],
                  vShape: [Int(ck.last!), headsKV ?? headsQ, headDimV ?? headDim],
                  layout: .packed(cuSeqlensQ: cq, cuSeqlensK: ck), dtype: dtype, attention: attention)
    }

    init(seed: UInt64, qShape: [Int], kShape: [Int], vShape: [Int]? = nil, layout: AttentionLayout, dtype: DType, attention: FlashAttention) {
        self.seed = seed
        self.qShape = qShape
        self.kShape = kShape
        self.vShape = vShape ?? kShape
        self.layout = layout
        self.dtype = dtype
        self.attention = attention
        var rng = SeededRandom(seed: seed)
        let round = dtype.rounded
        q = rng.floats(qShape.reduce(1, *), in: -1...1).map(round)
        k = rng.floats(kShape.reduce(1, *), in: -1...1).map(round)
        v = rng.floats(self.vShape.reduce(1, *), in: -1...1).map(round)
        dO = rng.floats(oShape.reduce(1, *), in: -1...1).map(round)
    }

    var description: String {
        "q\(qShape) k\(kShape)" + (vShape == kShape ? "" : " v\(vShape)") + " \(dtype) \(layout) \(attention) seed \(seed)"
    }

    var problem: AttentionReference.Problem {
        get throws { try AttentionReference.Problem(qShape: qShape, kShape: kShape, vShape: vShape, layout: layout, attention: attention) }
    }

    /// Relative error bound of the whole output (||out - ref|| / ||ref||) for this case's type.
    var tolerance: Double { Self.tolerance(dtype) }

    /// The bound for outputs stored as `dtype` (its rounding dominates; accumulation is fp32).
    static func tolerance(_ dtype: DType) -> Double {
        switch dtype {
        case .f16: return 2e-3
        case .bf16: return 8e-3
        default: return 1e-5
        }
    }

    func tensors(_ device: Device) throws -> (q: Tensor, k: Tensor, v: Tensor) {
        (try device.makeTensor(q, shape: qShape, dtype: dtype),
         try device.makeTensor(k, shape: kShape, dtype: dtype),
         try device.makeTensor(v, shape: vShape, dtype: dtype))
    }
}


/// Poisons a tensor with NaN so that an element the kernel forgot to write is caught.
func poison(_ tensor: Tensor, _ device: Device) throws {
    // 16-bit tensors of an odd element count end mid-word, where a word fill cannot reach.
    if tensor.byteCount % 4 != 0 {
        try tensor.write(floats: [Float](repeating: .nan, count: tensor.elementCount))
        return
    }
    let stream = try device.makeStream()
    let word: UInt32
    switch tensor.dtype {
    case .f16: word = 0x7E00_7E00
    case .bf16: word = 0x7FC0_7FC0
    default: word = Float.nan.bitPattern
    }
    try stream.fill(tensor.slice, word: word)
    try stream.synchronize()
}

/// Runs the forward on the GPU (into NaN-poisoned outputs) and compares O and LSE with the
/// reference; returns the errors.
@discardableResult
func checkForward(_ c: AttentionCase, _ device: Device, sourceLocation: SourceLocation = #_sourceLocation) throws -> (o: Double, lse: Double) {
    let (q, k, v) = try c.tensors(device)
    let problem = try c.problem
    let oType = c.attention.outputDType ?? c.dtype
    let o = try device.makeTensor(shape: c.oShape, dtype: oType)
    let lseShape: [Int]
    switch c.layout {
    case .dense: lseShape = [c.qShape[0], c.qShape[2], c.qShape[1]]
    case .packed: lseShape = [c.qShape[1], c.qShape[0]]
    }
    let lse = try device.makeTensor(shape: lseShape, dtype: .f32)
    try poison(o, device)
    try poison(lse, device)
    let stream = try device.makeStream()
    _ = try c.attention.forward(q: q, k: k, v: v, layout: c.layout, into: AttentionOutput(o: o, lse: lse), on: stream)
    try stream.synchronize()
    let ref = AttentionReference.forward(problem, q: c.q, k: c.k, v: c.v)
    let errO = relativeError(try o.readFloats(), ref.o)
    let errL = relativeError(try lse.readFloats(), ref.lse)
    #expect(errO <= max(AttentionCase.tolerance(oType), c.tolerance), "O error \(errO): \(c)", sourceLocation: sourceLocation)
    #expect(errL <= 1e-5, "LSE error \(errL): \(c)", sourceLocation: sourceLocation)
    return (errO, errL)
}

/// Runs forward then backward on the GPU (gradients into NaN-poisoned tensors) and compares
/// dQ, dK, dV with the fp64 reference; returns the gradients for further checks.
@discardableResult
func checkBackward(_ c: AttentionCase, _ device: Device, gradientDType: DType? = nil,
                   sourceLocation: SourceLocation = #_sourceLocation) throws -> [[Float]] {
    let (q, k, v) = try c.tensors(device)
    let problem = try c.problem
    let dO = try device.makeTensor(c.dO, shape: c.oShape, dtype: c.dtype)
    let gType = gradientDType ?? c.dtype
    let grads = AttentionGradients(dq: try device.makeTensor(shape: c.qShape, dtype: gType),
                                   dk: try device.makeTensor(shape: c.kShape, dtype: gType),
                                   dv: try device.makeTensor(shape: c.vShape, dtype: gType))
    for t in [grads.dq, grads.dk, grads.dv] { try poison(t, device) }
    let stream = try device.makeStream()
    let out = try c.attention.forward(q: q, k: k, v: v, layout: c.layout, on: stream)
    try stream.barrier()
    let result = try c.attention.backward(q: q, k: k, v: v, o: out.o, lse: out.lse, dO: dO, layout: c.layout,
                                          gradientDType: gradientDType, into: grads, on: stream)
    try stream.synchronize()
    let ref = AttentionReference.backward(problem, q: c.q, k: c.k, v: c.v, dO: c.dO)
    if c.attention.sinks != nil {
        let got = try result.dsinks?.readFloats() ?? []
        let err = relativeError(got, ref.dsinks, floor: 1e-2)
        #expect(got.count == ref.dsinks.count && err <= max(c.tolerance, 1e-4), "dsinks error \(err): \(c)", sourceLocation: sourceLocation)
    } else {
        #expect(result.dsinks == nil, "dsinks without sinks: \(c)", sourceLocation: sourceLocation)
    }
    let got = [try grads.dq.readFloats(), try grads.dk.readFloats(), try grads.dv.readFloats()]
    let bound = c.tolerance
    for (name, gpu, cpu) in [("dQ", got[0], ref.dq), ("dK", got[1], ref.dk), ("dV", got[2], ref.dv)] {
        let err = relativeError(gpu, cpu, floor: 1e-2)
        #expect(err <= bound, "\(name) error \(err): \(c)", sourceLocation: sourceLocation)
    }
    return got
}

/// Runs decode (`splits` nil: the planned split) and compares O and LSE with the reference;
/// returns the path.
@discardableResult
func checkDecode(_ c: AttentionCase, _ device: Device, splits: Int? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws -> String {
    let (q, k, v) = try c.tensors(device)
    let stream = try device.makeStream()
    let out = try c.attention.decode(q: q, kCache: k, vCache: v, layout: c.layout, splits: splits, on: stream)
    try stream.synchronize()
    let ref = AttentionReference.forward(try c.problem, q: c.q, k: c.k, v: c.v)
    let errO = relativeError(try out.o.readFloats(), ref.o)
    let errL = relativeError(try out.lse.readFloats(), ref.lse)
    #expect(errO <= c.tolerance && errL <= 1e-5, "O \(errO) LSE \(errL) \(out.path): \(c)", sourceLocation: sourceLocation)
    return out.path
}

/// A random block mask over sq x sk positions (about two thirds of the blocks kept), with query
/// block 1 seeing nothing when `emptyRow`.
func randomBlockMask(sq: Int, sk: Int, block: Int, emptyRow: Bool, _ rng: inout SeededRandom) -> BlockMask {
    let rows = (sq + block - 1) / block, cols = (sk + block - 1) / block
    var pattern = (0..<rows).map { _ in (0..<cols).map { _ in rng.next() % 3 != 0 } }
    if emptyRow && rows > 1 { pattern[1] = [Bool](repeating: false, count: cols) }
    return BlockMask(blockSize: block, queryBlocks: rows, keyBlocks: cols) { pattern[$0][$1] }
}
