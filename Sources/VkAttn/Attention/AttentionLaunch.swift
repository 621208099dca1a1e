import VulkanCompute
import VkAttnShaders

/// What the attention kernels share: the push constants (Shaders/attention/params.glsl), the
/// specialization constants, and the small side buffers (cu_seqlens, block mask).
struct AttentionLaunch {
    let geometry: AttentionGeometry
    let mask: AttentionMask
    let scale: Float
    let softcap: Float?
    let tiling: AttentionTiling
    let packGQA: Bool
    let splits: Int
    let splitKeys: Int
    /// Side buffers, uploaded once per call (a dummy word where unused).
    let cuQ: BufferSlice
    let cuK: BufferSlice
    let maskOffsets: BufferSlice
    let maskColumns: BufferSlice

    init(op: String, geometry g: AttentionGeometry, mask: AttentionMask, scale: Float, softcap: Float?,
         tiling: AttentionTiling, packGQA: Bool, splits: Int = 1, splitKeys: Int = 0,
         blocks: BlockMask? = nil, device: Device) throws {
        self.geometry = g
        self.mask = mask
        self.scale = scale
        self.softcap = softcap
        self.tiling = tiling
        self.packGQA = packGQA
        self.splits = splits
        self.splitKeys = splitKeys
        let dummy = try device.makeBuffer([Int32(0), 0, 0, 0]).whole
        cuQ = try g.cuSeqlensQ.map { try device.makeBuffer($0).whole } ?? dummy
        cuK = try g.cuSeqlensK.map { try device.makeBuffer($0).whole } ?? dummy
        let blockMask = blocks ?? mask.blocks
        maskOffsets = try blockMask.map { try device.makeBuffer($0.rowOffsets).whole } ?? dummy
        maskColumns = try blockMask.flatMap { $0.columnIndices.isEmpty ? nil : try device.makeBuffer($0.columnIndices).whole } ?? dummy
        self.maskRows = blockMask?.queryBlocks ?? 0

        try AttentionLaunch.checkGrid(op: op, [rowTiles, packGQA ? g.headsKV : g.headsQ, g.batch * splits], device: device)
        for value in [g.totalQ * g.headsQ * g.headDim * splits, g.totalK * g.headsKV * g.headDim] where value >= Int(UInt32.max) {
            throw VkAttnError.tooLarge(op: op, operand: "tensor", bytes: value, limit: Int(UInt32.max))
        }
    }

    private let maskRows: Int

    /// Throws unless a grid of `groups` workgroups fits the device.
    static func checkGrid(op: String, _ groups: [Int], device: Device) throws {
        let limits = device.capabilities.maxWorkgroupCount
        for axis in 0..<3 where groups[axis] > limits[axis] {
            throw VkAttnError.unsupported(op: op, reason: "\(groups[axis]) workgroups on axis \(axis) exceed the device's \(limits[axis]); split the batch or sequence")
        }
    }

    /// Query-row tiles along x (rows are (query, head-in-group) pairs when packing GQA).
    var rowTiles: Int {
        let rows = geometry.maxSq * (packGQA ? geometry.groupSize : 1)
        return max(1, (rows + tiling.br - 1) / tiling.br)
    }

    var pushConstants: PushConstants {
        let g = geometry
        let band = mask.band
        var p = PushConstants()
        p.append(UInt32(g.batch))
        p.append(UInt32(g.headsQ))
        p.append(UInt32(g.headsKV))
        p.append(UInt32(g.maxSq))
        p.append(UInt32(g.maxSk))
        p.append(UInt32(g.totalQ))
        p.append(scale * 1.442_695_040_888_963_4)
        p.append(softcap ?? 0)
        p.append(Int32(clamping: band.left))
        p.append(Int32(clamping: band.right))
        p.append(UInt32(splitKeys))
        p.append(UInt32(splits))
        p.append(UInt32(mask.blocks?.blockSize ?? 0))
        p.append(UInt32(maskRows))
        p.append(Int32(clamping: mask.diagonalOffset))
        p.append(UInt32(mask.anchor == .topLeft ? 1 : 0))
        return p
    }

    static let pushConstantBytes = 16 * 4

    /// Specialization shared by the kernels: 0 workgroup size, 1 D, 2 Br, 3 Bc, 4 subgroup
    /// size, 5 packed layout, 6 GQA packing, 7 block mask, 8 softcap, 9 split, 10 separate K
    /// and V buffers (forward), 11 lanes along the score product's streamed dimension, 12 lanes
    /// along dim quads; cooperative-matrix kernels take 13, 14, 15 (the shape M, N, K) instead of
    /// 10 to 12.
    func specialization(workgroupSize: Int, split: Bool = false) -> [UInt32: SpecializationValue] {
        var spec: [UInt32: SpecializationValue] = [
            0: .int(workgroupSize), 1: .int(geometry.headDim), 2: .int(tiling.br), 3: .int(tiling.bc),
            4: .int(tiling.subgroupSize), 5: .bool(geometry.isPacked),
            6: .bool(packGQA), 7: .bool(mask.blocks != nil), 8: .bool(softcap != nil), 9: .bool(split)]
        if let shape = tiling.matrix {
            spec[13] = .int(shape.m)
            spec[14] = .int(shape.n)
            spec[15] = .int(shape.k)
            return spec
        }
        if tiling.kind == .forward { spec[10] = .bool(tiling.separateKV) }
        spec[11] = .int(tiling.scoreLanes)
        spec[12] = .int(tiling.quadLanes)
        return spec
    }
}

extension FlashAttention {
    /// Checks the options against a resolved problem.
    package func checkOptions(op: String, _ g: AttentionGeometry) throws -> (scale: Float, softcap: Float?) {
        let scale = self.scale ?? 1 / Float(g.headDim).squareRoot()
        guard scale.isFinite, scale != 0 else {
            throw VkAttnError.invalidValue(op: op, operand: "scale", reason: "\(scale) is not a finite nonzero number")
        }
        if let cap = softcap {
            guard cap.isFinite, cap > 0 else {
                throw VkAttnError.invalidValue(op: op, operand: "softcap", reason: "\(cap) must be finite and positive")
            }
        }
        guard mask.diagonalOffset.magnitude <= 1 << 30 else {
            throw VkAttnError.invalidValue(op: op, operand: "diagonalOffset", reason: "\(mask.diagonalOffset) is beyond +-2^30")
        }
        for (name, w) in [("windowLeft", mask.windowLeft), ("windowRight", mask.windowRight)] {
            if let w, w < 0 {
                throw VkAttnError.invalidValue(op: op, operand: name, reason: "\(w) is negative (nil means unbounded)")
            }
        }
        if let blocks = mask.blocks {
            try blocks.validate(op: op, maxSq: g.maxSq, maxSk: g.maxSk)
        }
        return (scale, softcap)
    }
}
