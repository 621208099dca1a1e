/// How the tokens of Q, K, V (and O, dO, dQ, dK, dV) are laid out in memory. Q and K rows hold
/// Dk values, V and O rows Dv (Dk = Dv = D in most models; MLA has Dk = 576, Dv = 512).
public enum AttentionLayout: Hashable, Sendable {
    /// Q: [batch, Sq, Hq, Dk]; K: [batch, Sk, Hkv, Dk]; V: [batch, Sk, Hkv, Dv];
    /// O: [batch, Sq, Hq, Dv]; LSE: [batch, Hq, Sq].
    case dense
    /// Variable-length sequences packed back to back: Q: [totalQ, Hq, Dk], O: [totalQ, Hq, Dv];
    /// K: [totalK, Hkv, Dk], V: [totalK, Hkv, Dv]; LSE: [Hq, totalQ]. Sequence b owns query tokens
    /// `cuSeqlensQ[b] ..< cuSeqlensQ[b + 1]` and key tokens `cuSeqlensK[b] ..< cuSeqlensK[b + 1]`
    /// (cumulative lengths, starting at 0; empty sequences allowed).
    case packed(cuSeqlensQ: [Int32], cuSeqlensK: [Int32])
}

/// The shape of one attention problem, resolved from the operands and checked.
package struct AttentionGeometry: Hashable {
    package var batch: Int
    package var headsQ: Int
    package var headsKV: Int
    /// Dk: the width of Q and K rows.
    package var headDim: Int
    /// Dv: the width of V and O rows.
    package var headDimV: Int
    /// Dense: the sequence lengths. Packed: the longest sequence.
    package var maxSq: Int
    package var maxSk: Int
    package var totalQ: Int
    package var totalK: Int
    /// Q's storage type (and O's unless the op says otherwise).
    package var dtype: DType
    /// Packed layouts only: cumulative lengths (batch + 1 entries each).
    package var cuSeqlensQ: [Int32]?
    package var cuSeqlensK: [Int32]?
    /// K's and V's storage type: Q's, or (forward and decode) f16, bf16 or int8 under any Q.
    package var kvDType: DType? = nil
    /// K and V in pages (forward and decode, packed layouts): the block table and page count.
    package var pages: KVPages? = nil
    package var pageCount: Int = 0

    /// K's and V's storage type.
    package var kvType: DType { kvDType ?? dtype }

    package var isPacked: Bool { cuSeqlensQ != nil }
    package var groupSize: Int { max(1, headsQ / max(headsKV, 1)) }  // 1 when there are no heads

    package func sequence(_ b: Int) -> (qStart: Int, sq: Int, kStart: Int, sk: Int) {
        if let cq = cuSeqlensQ, let ck = cuSeqlensK {
            return (Int(cq[b]), Int(cq[b + 1] - cq[b]), Int(ck[b]), Int(ck[b + 1] - ck[b]))
        }
        return (b * maxSq, maxSq, b * maxSk, maxSk)
    }

    package var qShape: [Int] { isPacked ? [totalQ, headsQ, headDim] : [batch, maxSq, headsQ, headDim] }
    package var kvShape: [Int] {
        if let pages { return [pageCount, pages.pageSize, headsKV, headDim] }
        return isPacked ? [totalK, headsKV, headDim] : [batch, maxSk, headsKV, headDim]
    }
    /// V's shape: K's with Dv.
    package var vShape: [Int] { Array(kvShape.dropLast()) + [headDimV] }
    /// O's (and dO's) shape: Q's with Dv.
    package var oShape: [Int] { isPacked ? [totalQ, headsQ, headDimV] : [batch, maxSq, headsQ, headDimV] }
    package var lseShape: [Int] { isPacked ? [headsQ, totalQ] : [batch, headsQ, maxSq] }

    /// Element offset of row (b, i, h) of a [*, S, H, D]-style tensor.
    package func qOffset(b: Int, i: Int, h: Int) -> Int { ((sequence(b).qStart + i) * headsQ + h) * headDim }
    package func kOffset(b: Int, j: Int, h: Int) -> Int { ((sequence(b).kStart + j) * headsKV + h) * headDim }
    package func vOffset(b: Int, j: Int, h: Int) -> Int { ((sequence(b).kStart + j) * headsKV + h) * headDimV }
    package func oOffset(b: Int, i: Int, h: Int) -> Int { ((sequence(b).qStart + i) * headsQ + h) * headDimV }
    package func lseOffset(b: Int, i: Int, h: Int) -> Int {
        isPacked ? h * totalQ + sequence(b).qStart + i : (b * headsQ + h) * maxSq + i
    }

    /// The widest Q/K rows (Dk) the forward and decode take: DeepSeek's MLA (576).
    package static let maxHeadDimK = 576
    /// The widest V/O rows (Dv) the forward and decode take: MLA's 512.
    package static let maxHeadDimV = 512

    /// Checks Q, K, V and the layout; throws a `VkAttnError` naming `op` and the operand.
    package static func resolve(op: String, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout) throws -> AttentionGeometry {
        let device = q.device
        for (name, t) in [("K", k), ("V", v)] where t.device !== device {
            throw VkAttnError.deviceMismatch(op: op, operand: name)
        }
        try checkQueryType(op: op, q)
        for (name, t) in [("K", k), ("V", v)] where t.dtype != q.dtype {
            throw VkAttnError.dtypeMismatch(op: op, operand: name, expected: q.dtype.rawValue, actual: t.dtype.rawValue)
        }
        let g = try resolve(op: op, qShape: q.shape, kShape: k.shape, vShape: v.shape, dtype: q.dtype, layout: layout)
        for (name, t) in [("Q", q), ("K", k), ("V", v)] { try t.expectBindable(op: op, name) }
        return g
    }

    /// Q is f32, f16 or bf16, and the device can store it.
    static func checkQueryType(op: String, _ q: Tensor) throws {
        let device = q.device
        guard q.dtype == .f32 || q.dtype.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "Q", expected: "f32, f16 or bf16", actual: q.dtype.rawValue)
        }
        if q.dtype == .f16 && !(device.enabled.shaderFloat16 && device.enabled.storageBuffer16BitAccess) {
            throw VkAttnError.unsupported(op: op, reason: "f16 needs shaderFloat16 and storageBuffer16BitAccess, which \(device.label) lacks")
        }
        if q.dtype == .bf16 && !device.enabled.storageBuffer16BitAccess {
            throw VkAttnError.unsupported(op: op, reason: "bf16 needs storageBuffer16BitAccess, which \(device.label) lacks")
        }
    }

    /// Checks the shapes and the layout (no device involved).
    package static func resolve(op: String, qShape: [Int], kShape: [Int], vShape: [Int], dtype: DType, layout: AttentionLayout) throws -> AttentionGeometry {
        let packed: Bool
        switch layout {
        case .dense: packed = false
        case .packed: packed = true
        }
        let rank = packed ? 3 : 4
        for (name, shape) in [("Q", qShape), ("K", kShape), ("V", vShape)] where shape.count != rank || shape.contains(where: { $0 < 0 }) {
            throw VkAttnError.shapeMismatch(op: op, operand: name, expected: packed ? "[tokens, heads, headDim]" : "[batch, seq, heads, headDim] (zero or more each)", actual: "\(shape)")
        }
        let d = qShape[rank - 1], dv = vShape[rank - 1]
        guard (1...maxHeadDimK).contains(d) else {
            throw VkAttnError.invalidValue(op: op, operand: "headDim", reason: "\(d) (Q's last dimension) is outside 1...\(maxHeadDimK)")
        }
        guard (1...maxHeadDimV).contains(dv) else {
            throw VkAttnError.invalidValue(op: op, operand: "headDimV", reason: "\(dv) (V's last dimension) is outside 1...\(maxHeadDimV)")
        }
        let hq = qShape[rank - 2], hkv = kShape[rank - 2]
        guard kShape[rank - 1] == d else {
            throw VkAttnError.shapeMismatch(op: op, operand: "K", expected: "head dim \(d) (as Q)", actual: "\(kShape)")
        }
        guard Array(vShape.dropLast()) == Array(kShape.dropLast()) else {
            throw VkAttnError.shapeMismatch(op: op, operand: "V", expected: "\(Array(kShape.dropLast()) + [dv]) (as K, any head dim)", actual: "\(vShape)")
        }
        // No query heads is legal (nothing to compute); query heads with no key/value heads is not.
        guard hq == 0 || (hkv > 0 && hq % hkv == 0) else {
            throw VkAttnError.invalidValue(op: op, operand: "heads", reason: "query heads \(hq) is not a multiple of key/value heads \(hkv)")
        }
        switch layout {
        case .dense:
            guard kShape[0] == qShape[0] else {
                throw VkAttnError.shapeMismatch(op: op, operand: "K", expected: "batch \(qShape[0])", actual: "\(kShape)")
            }
            return AttentionGeometry(batch: qShape[0], headsQ: hq, headsKV: hkv, headDim: d, headDimV: dv, maxSq: qShape[1], maxSk: kShape[1],
                                     totalQ: qShape[0] * qShape[1], totalK: kShape[0] * kShape[1], dtype: dtype)
        case let .packed(cuQ, cuK):
            try checkCumulative(op: op, "cuSeqlensQ", cuQ, total: qShape[0])
            try checkCumulative(op: op, "cuSeqlensK", cuK, total: kShape[0])
            guard cuQ.count == cuK.count else {
                throw VkAttnError.invalidValue(op: op, operand: "cuSeqlensK", reason: "has \(cuK.count) entries, cuSeqlensQ has \(cuQ.count)")
            }
            let lengthsQ = zip(cuQ.dropFirst(), cuQ).map { Int($0 - $1) }
            let lengthsK = zip(cuK.dropFirst(), cuK).map { Int($0 - $1) }
            return AttentionGeometry(batch: cuQ.count - 1, headsQ: hq, headsKV: hkv, headDim: d, headDimV: dv,
                                     maxSq: lengthsQ.max() ?? 0, maxSk: lengthsK.max() ?? 0,
                                     totalQ: qShape[0], totalK: kShape[0], dtype: dtype, cuSeqlensQ: cuQ, cuSeqlensK: cuK)
        }
    }

    package static func checkCumulative(op: String, _ name: String, _ cu: [Int32], total: Int) throws {
        guard cu.count >= 1 else {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "needs batch + 1 entries ([0] for no sequences), got none")
        }
        guard cu[0] == 0 else {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "must start at 0, got \(cu[0])")
        }
        for b in 1..<cu.count where cu[b] < cu[b - 1] {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "decreases at index \(b) (\(cu[b - 1]) -> \(cu[b])): not monotonic")
        }
        guard Int(cu[cu.count - 1]) == total else {
            throw VkAttnError.invalidValue(op: op, operand: name, reason: "ends at \(cu[cu.count - 1]) but the tensor has \(total) tokens")
        }
    }
}
