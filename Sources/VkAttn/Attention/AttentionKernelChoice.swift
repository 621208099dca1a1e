import VulkanCompute
import VkAttnShaders

extension FlashAttention {
    /// The forward's (and decode's) tiles; `rows` (decode) is the rows per (sequence, K/V head).
    /// A kernel's tiles: cooperative matrices where `preference` allows and the build (`shader`),
    /// the device and the operands can run them, else the scalar kernel's, with the reason
    /// recorded (`cooperativeMatrixSkipped`, shown in `path` on devices that offer cooperative matrices).
    /// `.cooperativeMatrix` turns every reason into a typed error.
    func tiling(_ kind: AttentionTiling.Kind, op: String, geometry g: AttentionGeometry, shader: ShaderSource,
                operands: [(String, Tensor)], device: Device, rows: Int? = nil) throws -> AttentionTiling {
        let maxTile = mask.blocks?.blockSize
        var skipped = "the scalar kernels were requested"
        if preference != .scalar {
            switch cooperativeTiling(kind, geometry: g, shader: shader, operands: operands, device: device, maxTile: maxTile, rows: rows) {
            case .success(let tiling):
                return tiling
            case .failure(let why):
                if preference == .cooperativeMatrix {
                    throw VkAttnError.unsupported(op: op, reason: "cooperative-matrix kernel: \(why.reason)")
                }
                skipped = why.reason
            }
        }
        var tiling = try AttentionTiling.choose(kind, headDim: g.headDim, headDimV: g.headDimV, device: device, maxTile: maxTile, rows: rows)
        if device.enabled.cooperativeMatrixKHR { tiling.cooperativeMatrixSkipped = skipped }
        return tiling
    }

    func cooperativeTiling(_ kind: AttentionTiling.Kind, geometry g: AttentionGeometry, shader: ShaderSource,
                           operands: [(String, Tensor)], device: Device, maxTile: Int?,
                           rows: Int?) -> Result<AttentionTiling, CooperativeMatrix.Unavailable> {
        if g.kvType != g.dtype {
            return .failure(CooperativeMatrix.Unavailable("Q is \(g.dtype) and K/V \(g.kvType): the cooperative-matrix kernels take one 16-bit type"))
        }
        // The kernels read their 16-bit operands as 16-byte words.
        for (name, t) in operands where t.slice.offset % 16 != 0 {
            return .failure(CooperativeMatrix.Unavailable("\(name) starts at byte \(t.slice.offset), not a multiple of 16"))
        }
        let tile = { (shape: CooperativeMatrixShape) in
            AttentionTiling.chooseCooperative(kind, headDim: g.headDim, headDimV: g.headDimV, shape: shape, device: device, maxTile: maxTile, rows: rows)
        }
        return CooperativeMatrix.shape(device: device, input: g.dtype, shader: shader) { tile($0) != nil }
            .flatMap { shape in
                tile(shape).map { .success($0) }
                    ?? .failure(CooperativeMatrix.Unavailable("no \(kind) tile of head dims \(g.headDim)/\(g.headDimV) fits \(device.label)"))
            }
    }
}
