import VulkanCompute

/// Tiles of the cooperative-matrix attention kernels (Shaders/attention/*_coopmat.comp). The
/// shared-memory formulas mirror the shaders' `shared` declarations: a change to either must
/// change both.
extension AttentionTiling {
    /// Forward: the K and V tiles as 16-byte words with one word of padding per row
    /// (2 * bc rows of d/8 + 1 words; Q's rows pass through them first, so br <= 2 bc), the fp32
    /// score rows (br rows of bc + 4), the 16-bit P rows (br rows of bc + 8) and one M x N fp32
    /// broadcast tile per subgroup.
    static func coopmatForwardSharedBytes(br: Int, bc: Int, d: Int, subgroups: Int, shape: CooperativeMatrixShape) -> Int {
        16 * 2 * bc * (d / 8 + 1) + 4 * br * (bc + 4) + 2 * br * (bc + 8) + 4 * subgroups * shape.m * shape.n
    }

    /// The forward's tiles on cooperative matrices of `shape`, or nil when none fits the device
    /// (shared memory, workgroup size, subgroup layout) and the mask's blocks (`maxTile`).
    /// `rows` (decode) caps the subgroups near the rows there are.
    static func chooseCooperative(_ kind: Kind, headDim d: Int, shape: CooperativeMatrixShape, device: Device,
                                  maxTile: Int? = nil, rows: Int? = nil) -> AttentionTiling? {
        let caps = device.capabilities
        let required: Int?
        do { required = try subgroupRequirement(device) } catch { return nil }
        let sg = required ?? caps.subgroupSize
        guard d % shape.k == 0, d % shape.n == 0, d % 8 == 0 else { return nil }
        // The coordinate work splits a subgroup's M rows over its lanes: a power-of-two number of
        // lanes per row, or a whole number of rows per lane.
        let lanesPerRow = sg >= shape.m ? sg / shape.m : 1
        guard sg >= shape.m ? (sg % shape.m == 0 && lanesPerRow & (lanesPerRow - 1) == 0) : shape.m % sg == 0 else { return nil }
        let maxWG = min(256, caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0])
        var subgroupCounts = [4, 2, 1]
        if let rows { subgroupCounts = subgroupCounts.filter { $0 == 1 || ($0 / 2) * shape.m < rows } }
        for ns in subgroupCounts where ns * sg <= maxWG {
            let br = ns * shape.m
            if let maxTile, br > maxTile || maxTile % br != 0 { continue }
            for bc in [64, 32, 16, 8] where bc % shape.n == 0 && bc % shape.k == 0 && br <= 2 * bc && bc % lanesPerRow == 0 {
                if let maxTile, bc > maxTile || maxTile % bc != 0 { continue }
                let smem = coopmatForwardSharedBytes(br: br, bc: bc, d: d, subgroups: ns, shape: shape)
                guard smem <= caps.maxComputeSharedMemoryBytes else { continue }
                return AttentionTiling(br: br, bc: bc, subgroupSize: sg, workgroupSize: ns * sg, sharedBytes: smem,
                                       rowsPerSubgroup: shape.m, scoreLanes: lanesPerRow, quadLanes: 0, separateKV: true,
                                       kind: kind, matrix: shape)
            }
        }
        return nil
    }

    /// Loop iterations per streamed tile and once, counted as `loopIterations` does, with every
    /// cooperative-matrix load, store and multiply-add weighted as `matrixOpIterations` loop
    /// iterations (what a device that emulates them, like lavapipe, may spend on each).
    func coopmatLoopIterations(headDim d: Int, shape: CooperativeMatrixShape) -> (perTile: Int, once: Int) {
        let wg = workgroupSize, d8 = d / 8, ns = workgroupSize / subgroupSize
        let w = Self.matrixOpIterations(shape, subgroupSize: subgroupSize)
        let tpr = scoreLanes, rpl = max(1, shape.m / subgroupSize), cpl = bc / tpr
        let shuffles = 2 * (Int.bitWidth - 1 - max(tpr, 1).leadingZeroBitCount)
        let load = (bc * d8 + wg - 1) / wg
        let scores = (bc / shape.n) * (2 + (d / shape.k) * (1 + 2 * w) + w)
        let softmax = rpl * (3 + 2 * cpl + shuffles + shape.n / tpr)
        let products = (1 + bc / shape.k) * (1 + w) + (d / shape.n) * (2 + w + (bc / shape.k) * (1 + 2 * w))
        let perTile = load + scores + softmax + products + 4
        let once = (br * d8 + wg - 1) / wg + (d / shape.k) * (1 + w) + rpl * (1 + shape.n / tpr) + w
            + (d / shape.n) * (1 + 2 * w + (shape.m * shape.n + subgroupSize - 1) / subgroupSize) + 64 + ns
        return (perTile, once)
    }

    /// Loop iterations charged per cooperative-matrix operation. Mesa 26's lavapipe, the one
    /// CPU device with cooperative matrices, unrolls them (a 4100-tile forward ran in one
    /// invocation and matched the reference), so one each is already conservative.
    static func matrixOpIterations(_ shape: CooperativeMatrixShape, subgroupSize: Int) -> Int { 1 }
}
