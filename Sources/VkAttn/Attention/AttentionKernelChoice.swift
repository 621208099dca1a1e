import VulkanCompute
import VkAttnShaders

extension FlashAttention {
    /// The forward's (and decode's) tiles: cooperative matrices where `preference` allows and the
    /// build, the device and the operands can run them, else the scalar kernels with the reason
    /// recorded (`matrixSkipped`, shown in `path` on devices that offer cooperative matrices).
    /// `rows` (decode) is the rows per (sequence, K/V head) there are.
    func forwardTiling(_ p: Prepared, q: Tensor, k: Tensor, v: Tensor, device: Device, rows: Int? = nil) throws -> AttentionTiling {
        let g = p.geometry
        let maxTile = mask.blocks?.blockSize
        var skipped = "the scalar kernels were requested"
        if preference != .scalar {
            switch cooperativeForwardTiling(g, output: p.out.o.dtype, operands: [("Q", q), ("K", k), ("V", v)],
                                            device: device, maxTile: maxTile, rows: rows) {
            case .success(let tiling):
                return tiling
            case .failure(let why):
                if preference == .cooperativeMatrix {
                    throw VkAttnError.unsupported(op: p.op, reason: "cooperative-matrix kernel: \(why.reason)")
                }
                skipped = why.reason
            }
        }
        var tiling = try AttentionTiling.choose(.forward, headDim: g.headDim, device: device, maxTile: maxTile, rows: rows)
        if device.enabled.cooperativeMatrixKHR { tiling.matrixSkipped = skipped }
        return tiling
    }

    func cooperativeForwardTiling(_ g: AttentionGeometry, output: DType, operands: [(String, Tensor)], device: Device,
                                  maxTile: Int?, rows: Int?) -> Result<AttentionTiling, CooperativeMatrix.Unavailable> {
        // The kernels read Q, K and V as 16-byte words.
        for (name, t) in operands where t.slice.offset % 16 != 0 {
            return .failure(CooperativeMatrix.Unavailable("\(name) starts at byte \(t.slice.offset), not a multiple of 16"))
        }
        let tile = { (shape: CooperativeMatrixShape) in
            AttentionTiling.chooseCooperative(.forward, headDim: g.headDim, shape: shape, device: device, maxTile: maxTile, rows: rows)
        }
        let shader = Self.forwardShader(input: g.dtype, output: output, cooperative: true)
        return CooperativeMatrix.shape(device: device, input: g.dtype, shader: shader) { tile($0) != nil }
            .flatMap { shape in tile(shape).map { .success($0) } ?? .failure(CooperativeMatrix.Unavailable("no tile fits")) }
    }
}
