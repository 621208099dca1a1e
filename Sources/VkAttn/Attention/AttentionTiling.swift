import VulkanCompute

/// Tile sizes and lane layout of the attention kernels for one device and head dimension.
/// The shared-memory formulas here are what the shaders' `shared` declarations add up to (see
/// Shaders/attention/*.comp): a change to either must change both.
///
/// Every kernel splits its workgroup into subgroups that each own some rows (forward, dQ:
/// query rows; dK/dV: keys) for the whole kernel, and splits a subgroup's lanes two ways: along
/// the streamed dimension for the score products and along dim quads (vec4) for the output
/// products.
public struct AttentionTiling: Hashable, Sendable, CustomStringConvertible {
    /// Query rows per workgroup (forward, dQ) or per inner step (dK/dV).
    public let br: Int
    /// Keys per tile (forward, dQ) or per workgroup (dK/dV).
    public let bc: Int
    /// The subgroup size the kernel is built for.
    public let subgroupSize: Int
    /// Invocations per workgroup.
    public let workgroupSize: Int
    /// Shared memory the kernel declares, in bytes.
    public let sharedBytes: Int
    /// Rows (forward, dQ) or keys (dK/dV) each subgroup owns.
    public let rowsPerSubgroup: Int
    /// Lanes along the streamed dimension in the score products (keys, or query rows for dK/dV).
    public let scoreLanes: Int
    /// Lanes along dim quads in the output products.
    public let quadLanes: Int
    /// Forward only: whether K and V have their own shared buffers (else they take turns).
    public let separateKV: Bool
    /// The widths the kernel works at: Dk and Dv rounded up to what its lanes or matrices
    /// need (a multiple of 4 x `quadLanes` for the scalar kernels, of 8 and the matrix side for
    /// the cooperative-matrix ones). Loads fill the padding with zeros; stores skip it.
    public internal(set) var paddedHeadDim: Int = 0, paddedHeadDimV: Int = 0
    let kind: Kind
    /// The cooperative-matrix shape (M x N x K) of a tensor-core tiling; nil for the scalar
    /// kernels. Each subgroup then owns M rows (forward, dQ) or M keys (dK/dV).
    public internal(set) var matrix: CooperativeMatrixShape? = nil
    /// For a scalar tiling on a device that offers cooperative matrices: why they are not used.
    public internal(set) var cooperativeMatrixSkipped: String? = nil

    enum Kind: Hashable { case forward, dq, dkdv }

    /// A one-line summary of the tiles, lanes and shared memory.
    public var description: String {
        (matrix.map { "coopmat \(CooperativeMatrix.text($0)) " } ?? "") + "Br=\(br) Bc=\(bc) wg=\(workgroupSize) sg=\(subgroupSize) rows/subgroup=\(rowsPerSubgroup) lanes \(scoreLanes)x\(quadLanes)"
            + (kind == .forward ? (separateKV ? " K|V" : " K,V") : "") + " smem=\(sharedBytes)B"
    }

    /// The padded widths as the path shows them: "" when no padding, else e.g. " pad 59->64".
    func paddingText(headDim dk: Int, headDimV dv: Int) -> String {
        var parts: [String] = []
        if paddedHeadDim != dk { parts.append("\(dk)->\(paddedHeadDim)") }
        if paddedHeadDimV != dv && (dv != dk || paddedHeadDimV != paddedHeadDim) { parts.append("v \(dv)->\(paddedHeadDimV)") }
        return parts.isEmpty ? "" : " pad " + parts.joined(separator: " ")
    }

    // MARK: Shared memory (must match the shaders)

    /// Forward: vec4 rows padded by one vec4 (`pk`, `pv`: the padded Dk and Dv): the Q tile
    /// (br rows of pk/4 + 1), the K tile (bc rows), the V tile (bc rows of pv/4 + 1; without
    /// `separateKV` V takes turns with K in one buffer of the wider rows, and V's own is one
    /// vec4) and the P tile (br rows of bc/4 + 1).
    static func forwardSharedBytes(br: Int, bc: Int, pk: Int, pv: Int, separateKV: Bool) -> Int {
        let rk = pk / 4 + 1, rv = pv / 4 + 1, pq = bc / 4 + 1
        let kv = separateKV ? bc * rk + bc * rv : bc * max(rk, rv) + 1
        return 16 * (br * rk + kv + br * pq)
    }

    /// dQ: the Q tile (br rows of pk/4 + 1) and dO tile (br rows of pv/4 + 1), the K and V
    /// tiles (bc rows each), dS (br rows of bc/4 + 1, the padding quad holding LSE and Delta).
    static func dqSharedBytes(br: Int, bc: Int, pk: Int, pv: Int) -> Int {
        let rk = pk / 4 + 1, rv = pv / 4 + 1
        return 16 * (br * (rk + rv) + bc * (rk + rv) + br * (bc / 4 + 1))
    }

    /// dK/dV: K and V tiles (bc rows each), Q and dO tiles (br rows each), P^T and dS^T (bc rows
    /// of br/4 + 1 each), and (LSE, Delta) per query row.
    static func dkdvSharedBytes(br: Int, bc: Int, pk: Int, pv: Int) -> Int {
        let rk = pk / 4 + 1, rv = pv / 4 + 1
        return 16 * (bc * (rk + rv) + br * (rk + rv) + 2 * bc * (br / 4 + 1)) + 8 * br
    }

    // MARK: Choice

    /// The kernels' subgroup requirements: subgroup operations in compute shaders (arithmetic
    /// for the forward's row reductions) and one known subgroup size, pinned with subgroup
    /// size control where the device varies it. Returns the size to require of the pipeline,
    /// or nil when the device has only one.
    static func subgroupRequirement(_ device: Device) throws -> Int? {
        let caps = device.capabilities
        guard caps.subgroupInCompute, caps.subgroupOperations.contains("arithmetic"), caps.subgroupOperations.contains("shuffle") else {
            throw VkAttnError.unsupported(op: "attention", reason: "\(device.label) lacks subgroup arithmetic and shuffles in compute shaders")
        }
        if caps.minSubgroupSize == caps.maxSubgroupSize { return nil }
        guard device.enabled.subgroupSizeControl else {
            throw VkAttnError.unsupported(op: "attention", reason: "\(device.label) varies its subgroup size (\(caps.minSubgroupSize)...\(caps.maxSubgroupSize)) without subgroup size control")
        }
        return caps.subgroupSize
    }

    /// Lanes along dim quads: the largest power of two up to the subgroup size for which
    /// rounding each width's quads (ceil(d / 4)) up to a multiple of the lanes wastes at most an
    /// eighth of them. Widths that are multiples of 4 x lanes waste nothing (D = 96 has 24
    /// quads: 8 lanes); D = 59 has 15 quads, padded to 16 for 8 lanes.
    static func quadLanes(subgroup sg: Int, widths: [Int]) -> Int {
        var lanes = 1
        while lanes * 2 <= sg && widths.allSatisfy({ d in
            let quads = (d + 3) / 4
            return (roundUp(quads, lanes * 2) - quads) * 8 <= quads
        }) { lanes *= 2 }
        return lanes
    }

    static func roundUp(_ x: Int, _ multiple: Int) -> Int { (x + multiple - 1) / multiple * multiple }

    /// The first candidate (largest blocks first) that fits the device's shared memory,
    /// workgroup limits, subgroup size and a register budget. `rows` (small, as in decode)
    /// caps the forward's row block near the rows there are.
    static func choose(_ kind: Kind, headDim dk: Int, headDimV dv: Int, device: Device, maxTile: Int? = nil, rows: Int? = nil) throws -> AttentionTiling {
        let caps = device.capabilities
        let sg = try subgroupRequirement(device) ?? caps.subgroupSize
        let maxWG = min(256, caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0])
        let ql = quadLanes(subgroup: sg, widths: [dk, dv])
        let pk = 4 * roundUp((dk + 3) / 4, ql), pv = 4 * roundUp((dv + 3) / 4, ql)
        // Quads per lane of the output products: O (forward) is Dv wide, dQ Dk, dK and dV both.
        let qz: Int
        switch kind {
        case .forward: qz = pv / 4 / ql
        case .dq: qz = pk / 4 / ql
        case .dkdv: qz = (pk + pv) / 8 / ql
        }
        let blocks: [(Int, Int)]
        switch kind {
        case .forward:
            blocks = [(64, 64), (64, 32), (32, 64), (32, 32), (32, 16), (16, 64), (16, 32), (16, 16),
                      (8, 64), (8, 32), (8, 16), (8, 8), (4, 64), (4, 32), (4, 16), (4, 8), (4, 4)]
        case .dq:
            blocks = [(32, 32), (16, 32), (32, 16), (16, 16), (8, 32), (8, 16), (8, 8), (4, 16), (4, 8)]
        case .dkdv:
            blocks = [(32, 32), (16, 32), (32, 16), (16, 16), (8, 32), (8, 16), (8, 8), (4, 8)]
        }
        var rowCap = Int.max
        if kind == .forward, let rows, rows < 32 {
            rowCap = 4
            while rowCap < rows { rowCap *= 2 }
        }
        for (br, bc) in blocks where br <= rowCap {
            if let maxTile, br > maxTile || bc > maxTile { continue }
            for separate in kind == .forward ? [true, false] : [true] {
                let smem: Int
                switch kind {
                case .forward: smem = forwardSharedBytes(br: br, bc: bc, pk: pk, pv: pv, separateKV: separate)
                case .dq: smem = dqSharedBytes(br: br, bc: bc, pk: pk, pv: pv)
                case .dkdv: smem = dkdvSharedBytes(br: br, bc: bc, pk: pk, pv: pv)
                }
                guard smem <= caps.maxComputeSharedMemoryBytes else { continue }
                let owned = kind == .dkdv ? bc : br      // rows (keys) the subgroups share out
                let streamed = kind == .dkdv ? br : bc   // keys (rows) the score product walks
                let sl = min(sg, streamed)
                for subgroups in [8, 4, 2, 1] where owned % subgroups == 0 && subgroups * sg <= maxWG {
                    let rm = owned / subgroups
                    guard rm % (sg / sl) == 0, rm % (sg / ql) == 0 else { continue }
                    let rs = rm / (sg / sl), cn = streamed / sl, rz = rm / (sg / ql)
                    let scoreRegisters = (kind == .forward ? 1 : 2) * rs * cn
                    let outputRegisters = (kind == .dkdv ? 2 : 1) * rz * qz * 4
                    guard scoreRegisters <= 64, outputRegisters <= 128, cn <= 8 else { continue }
                    var tiling = AttentionTiling(br: br, bc: bc, subgroupSize: sg, workgroupSize: subgroups * sg, sharedBytes: smem,
                                                 rowsPerSubgroup: rm, scoreLanes: sl, quadLanes: ql, separateKV: separate, kind: kind)
                    (tiling.paddedHeadDim, tiling.paddedHeadDimV) = (pk, pv)
                    return tiling
                }
            }
        }
        throw VkAttnError.unsupported(op: "attention", reason: "no \(kind) tile of head dims \(dk)/\(dv) fits \(caps.maxComputeSharedMemoryBytes) bytes of shared memory (the limit), subgroups of \(sg) and 128 accumulators per lane on \(device.label)")
    }

    /// Lanes per row of the small row-wise kernels (Delta pre-pass, merge): a power of two no
    /// larger than 8 or the subgroup.
    package static func threadsPerRow(_ device: Device) -> Int {
        var t = 1
        while t * 2 <= min(8, device.capabilities.minSubgroupSize) { t *= 2 }
        return t
    }

    /// Forward (and decode) tiles for `headDim` on `device`.
    /// The largest scalar forward tiling that fits the device's shared memory and subgroups.
    /// - Parameters:
    ///   - headDim: Dk, the width of Q and K rows (1 ... 576).
    ///   - headDimV: Dv, the width of V and O rows (1 ... 512); nil: as Dk.
    ///   - device: The device to tile for.
    /// - Returns: The tiling.
    /// - Throws: ``VkAttnError/unsupported(op:reason:)`` when no tile fits the device.
    public static func forward(headDim: Int, headDimV: Int? = nil, device: Device) throws -> AttentionTiling {
        try choose(.forward, headDim: headDim, headDimV: headDimV ?? headDim, device: device)
    }
}

// MARK: Loop budget

extension AttentionTiling {
    /// An upper bound on the loop iterations one invocation runs per streamed tile (a key tile
    /// for the forward and dQ, a query tile of one head for dK/dV), counting every loop of the
    /// tile's body as if the compiler unrolled none of them, and on the iterations run once
    /// outside the tile loop. Devices that cap an invocation's loop iterations
    /// (`DeviceCapabilities.loopIterationLimit`) get the work split so that prologue + tiles x
    /// per-tile stays below the cap.
    func loopIterations() -> (perTile: Int, once: Int) {
        if let shape = matrix { return coopmatLoopIterations(shape: shape) }
        // Counted at the wider padded width (an upper bound for both products).
        let wg = workgroupSize, d4 = max(paddedHeadDim, paddedHeadDimV) / 4
        let streamed = kind == .dkdv ? br : bc
        let owned = kind == .dkdv ? bc : br
        let rs = rowsPerSubgroup / max(1, subgroupSize / scoreLanes)
        let cn = streamed / scoreLanes
        let rz = rowsPerSubgroup / max(1, subgroupSize / quadLanes)
        let qz = d4 / quadLanes
        let shuffles = 2 * Int(log2(Double(max(scoreLanes, 1))))
        let load = (streamed * d4 + wg - 1) / wg
        let scores = rs * cn + d4 * (1 + cn + rs * (1 + cn))
        let products = (streamed / 4) * (1 + 4 * (1 + qz) + rz * (1 + qz))
        let perTile: Int
        switch kind {
        case .forward:
            perTile = 2 * load + scores + rs * (1 + 2 * cn + shuffles) + rz * (1 + qz) + products + 4
        case .dq:
            perTile = load + scores + d4 * rs * cn + rs * (1 + cn) + products + 4
        case .dkdv:
            perTile = load + (streamed + wg - 1) / wg + scores + d4 * rs * cn + rs * (1 + cn) + 2 * products + 4
        }
        let once = (owned * d4 + wg - 1) / wg + (owned + wg - 1) / wg + 4 * rs + 2 * rz * (1 + qz) + 64
        return (perTile, once)
    }

    /// The most streamed tiles one invocation may walk on `device` (nil: no cap), keeping a
    /// tenth of the budget in reserve.
    func maxTilesPerInvocation(device: Device) -> Int? {
        guard let limit = device.capabilities.loopIterationLimit else { return nil }
        let cost = loopIterations()
        return max(1, (limit * 9 / 10 - cost.once) / cost.perTile)
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
