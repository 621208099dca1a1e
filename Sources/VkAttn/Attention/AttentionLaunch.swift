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
    /// ALiBi slopes and sink logits per query head (a dummy word where unused).
    let alibiSlopes: BufferSlice
    let sinks: BufferSlice
    let hasAlibi: Bool, hasSinks: Bool
    /// The paged cache's block table (a dummy word when contiguous).
    let blockTable: BufferSlice
    /// The op name errors carry.
    let op: String

    init(op: String, geometry g: AttentionGeometry, mask: AttentionMask, scale: Float, softcap: Float?,
         tiling: AttentionTiling, packGQA: Bool, splits: Int = 1, splitKeys: Int = 0,
         blocks: BlockMask? = nil, alibiSlopes alibi: [Float]? = nil, sinks sinkLogits: [Float]? = nil, device: Device) throws {
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
        self.maskPerHead = (blockMask?.heads ?? 1) > 1
        // A packed tile mixes the heads of a GQA group, which a per-head mask tells apart.
        guard !(packGQA && maskPerHead) else {
            throw VkAttnError.unsupported(op: op, reason: "GQA packing with a per-head block mask")
        }
        alibiSlopes = try alibi.map { try device.makeBuffer($0).whole } ?? dummy
        sinks = try sinkLogits.map { try device.makeBuffer($0).whole } ?? dummy
        (hasAlibi, hasSinks) = (alibi != nil, sinkLogits != nil)
        blockTable = try g.pages.flatMap { $0.blockTable.isEmpty ? nil : try device.makeBuffer($0.blockTable).whole } ?? dummy
        self.op = op

        try AttentionLaunch.checkGrid(op: op, [rowTiles, packGQA ? g.headsKV : g.headsQ, g.batch * splits], device: device)
        let width = max(g.headDim, g.headDimV)
        for value in [g.totalQ * g.headsQ * width * splits, g.totalK * g.headsKV * width] where value >= Int(UInt32.max) {
            throw VkAttnError.tooLarge(op: op, operand: "tensor", bytes: value, limit: Int(UInt32.max))
        }
    }

    private let maskRows: Int
    /// The block mask holds one pattern per query head (rows head-major, `maskRows` per head).
    private let maskPerHead: Bool

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

    var pushConstants: AttentionParams {
        let g = geometry
        let band = mask.band
        return AttentionParams(
            batch: UInt32(g.batch), headsQ: UInt32(g.headsQ), headsKv: UInt32(g.headsKV), seqQ: UInt32(g.maxSq),
            seqK: UInt32(g.maxSk), totalQ: UInt32(g.totalQ), scaleLog2: scale * 1.442_695_040_888_963_4, softcap: softcap ?? 0,
            windowLeft: Int32(clamping: band.left), windowRight: Int32(clamping: band.right), splitKeys: UInt32(splitKeys),
            splits: UInt32(splits), maskBlock: UInt32(mask.blocks?.blockSize ?? 0), maskRows: UInt32(maskRows),
            diagOffset: Int32(clamping: mask.diagonalOffset), topLeft: mask.anchor == .topLeft ? 1 : 0,
            pageSize: UInt32(g.pages?.pageSize ?? 0), tableStride: UInt32(g.pages?.pagesPerSequence ?? 0))
    }

    /// Specialization shared by the kernels (names as in the GLSL): the workgroup size, row
    /// widths (DK, DV) and the tiling's padded widths (DKP, DVP), tile (BR x BC), subgroup size, packed layout, GQA packing, block mask (and
    /// whether it is per head), softcap and
    /// split; the scalar kernels add their lane split of the two products (the forward also
    /// whether K and V sit in separate shared buffers), the cooperative-matrix ones the shape
    /// MM x NN x KK.
    func specialization(workgroupSize: Int, split: Bool = false) -> [String: SpecializationValue] {
        var spec: [String: SpecializationValue] = [
            "local_size_x": .int(workgroupSize), "DK": .int(geometry.headDim), "DV": .int(geometry.headDimV),
            "DKP": .int(tiling.paddedHeadDim), "DVP": .int(tiling.paddedHeadDimV), "BR": .int(tiling.br), "BC": .int(tiling.bc),
            "SG": .int(tiling.subgroupSize), "VARLEN": .bool(geometry.isPacked),
            "PACK_GQA": .bool(packGQA), "BLOCK_MASK": .bool(mask.blocks != nil), "MASK_PER_HEAD": .bool(maskPerHead), "SOFTCAP": .bool(softcap != nil), "SPLIT": .bool(split),
            "ALIBI": .bool(hasAlibi), "SINKS": .bool(hasSinks), "PAGED": .bool(geometry.pages != nil)]
        if let shape = tiling.matrix {
            spec["MM"] = .int(shape.m)
            spec["NN"] = .int(shape.n)
            spec["KK"] = .int(shape.k)
            return spec
        }
        if tiling.kind == .forward { spec["SEPARATE_KV"] = .bool(tiling.separateKV) }
        spec[tiling.kind == .dkdv ? "RL" : "KL"] = .int(tiling.scoreLanes)
        spec["QL"] = .int(tiling.quadLanes)
        return spec
    }
}

/// Shaders/attention/params.glsl: the push constants every attention kernel shares.
struct AttentionParams: PushConstantBlock {
    var batch: UInt32
    var headsQ: UInt32
    var headsKv: UInt32
    var seqQ: UInt32
    var seqK: UInt32
    var totalQ: UInt32
    var scaleLog2: Float
    var softcap: Float
    var windowLeft: Int32
    var windowRight: Int32
    var splitKeys: UInt32
    var splits: UInt32
    var maskBlock: UInt32
    var maskRows: UInt32
    var diagOffset: Int32
    var topLeft: UInt32
    var pageSize: UInt32
    var tableStride: UInt32
}

extension FlashAttention {
    /// Checks the options against a resolved problem.
    package func checkOptions(op: String, _ g: AttentionGeometry) throws -> (scale: Float, softcap: Float?) {
        for (name, values) in [("alibiSlopes", alibiSlopes), ("sinks", sinks)] {
            guard let values else { continue }
            guard values.count == g.headsQ else {
                throw VkAttnError.invalidValue(op: op, operand: name, reason: "has \(values.count) values, one per query head (\(g.headsQ)) expected")
            }
            if let bad = values.firstIndex(where: { !$0.isFinite }) {
                throw VkAttnError.invalidValue(op: op, operand: name, reason: "value \(bad) is \(values[bad]), not finite")
            }
        }
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
            try blocks.validate(op: op, maxSq: g.maxSq, maxSk: g.maxSk, headsQ: g.headsQ)
        }
        return (scale, softcap)
    }
}
