import VulkanCompute

/// Tiles of the cooperative-matrix attention kernels (Shaders/attention/*_coopmat.comp). The
/// shared-memory formulas mirror the shaders' `shared` declarations: a change to either must
/// change both.
extension AttentionTiling {
    /// Forward: the K and V tiles as 16-byte words with one word of padding per row (bc rows
    /// of pk/8 + 1 words and bc rows of pv/8 + 1; `pk`, `pv`: the padded Dk and Dv; Q's br rows
    /// of pk/8 + 1 pass through the same buffer first), the fp32 score rows (br rows of bc + 4),
    /// the 16-bit P rows (br rows of bc + 8) and one M x N fp32 broadcast tile per subgroup.
    static func coopmatForwardSharedBytes(br: Int, bc: Int, pk: Int, pv: Int, subgroups: Int, shape: CooperativeMatrixShape) -> Int {
        let wk = pk / 8 + 1, wv = pv / 8 + 1
        return 16 * max(br * wk, bc * (wk + wv)) + 4 * br * (bc + 4) + 2 * br * (bc + 8) + 4 * subgroups * shape.m * shape.n
    }

    /// dQ: the K and V tiles as words (Q's and dO's rows pass through them first), the fp32 S
    /// and dP rows (br rows of bc + 4 each) and the 16-bit dS rows (br rows of bc + 8).
    static func coopmatDqSharedBytes(br: Int, bc: Int, pk: Int, pv: Int) -> Int {
        let wk = pk / 8 + 1, wv = pv / 8 + 1
        return 16 * max(br * max(wk, wv), bc * (wk + wv)) + 2 * 4 * br * (bc + 4) + 2 * br * (bc + 8)
    }

    /// dK/dV: a staging tile of max(bc, br) word rows of each width (K and V first, then Q and
    /// dO per query tile), the fp32 S^T and dP^T rows (bc rows of br + 4 each), the 16-bit P^T
    /// and dS^T rows (bc rows of br + 8 each) and (LSE, Delta) per query row.
    static func coopmatDkdvSharedBytes(br: Int, bc: Int, pk: Int, pv: Int) -> Int {
        16 * max(bc, br) * (pk / 8 + 1 + pv / 8 + 1) + 2 * 4 * bc * (br + 4) + 2 * 2 * bc * (br + 8) + 8 * br
    }

    /// A width padded for matrices of `shape`: a multiple of 8 (16-byte words) and of the
    /// shape's K and N sides, which every product walks or writes it by.
    static func coopmatPadded(_ d: Int, shape: CooperativeMatrixShape) -> Int {
        roundUp(d, max(8, shape.k, shape.n))
    }

    /// Tiles of a cooperative-matrix kernel with matrices of `shape`, or nil when none fits the
    /// device (shared memory, workgroup size, subgroup layout) and the mask's blocks (`maxTile`).
    /// Each subgroup owns `shape.m` rows (forward, dQ: query rows; dK/dV: keys); the workgroup
    /// streams tiles of the other dimension. `rows` (decode) caps the subgroups near the rows
    /// there are.
    static func chooseCooperative(_ kind: Kind, headDim dk: Int, headDimV dv: Int, shape: CooperativeMatrixShape, device: Device,
                                  maxTile: Int? = nil, rows: Int? = nil) -> AttentionTiling? {
        let caps = device.capabilities
        let required: Int?
        do { required = try subgroupRequirement(device) } catch { return nil }
        let sg = required ?? caps.subgroupSize
        // max(8, K, N) is a multiple of each (all powers of two).
        guard [8, shape.k, shape.n].allSatisfy({ $0 > 0 && $0 & ($0 - 1) == 0 }) else { return nil }
        let pk = coopmatPadded(dk, shape: shape), pv = coopmatPadded(dv, shape: shape)
        // The coordinate work splits a subgroup's M rows over its lanes: a power-of-two number of
        // lanes per row, or a whole number of rows per lane.
        let lanesPerRow = sg >= shape.m ? sg / shape.m : 1
        guard sg >= shape.m ? (sg % shape.m == 0 && lanesPerRow & (lanesPerRow - 1) == 0) : shape.m % sg == 0 else { return nil }
        let maxWG = min(256, caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0])
        var subgroupCounts = [4, 2, 1]
        if let rows { subgroupCounts = subgroupCounts.filter { $0 == 1 || ($0 / 2) * shape.m < rows } }
        for ns in subgroupCounts where ns * sg <= maxWG {
            let owned = ns * shape.m
            if let maxTile, owned > maxTile || maxTile % owned != 0 { continue }
            for streamed in [64, 32, 16, 8] where streamed % shape.n == 0 && streamed % shape.k == 0 && streamed % lanesPerRow == 0 {
                if let maxTile, streamed > maxTile || maxTile % streamed != 0 { continue }
                let (br, bc) = kind == .dkdv ? (streamed, owned) : (owned, streamed)
                let smem: Int
                switch kind {
                case .forward:
                    smem = coopmatForwardSharedBytes(br: br, bc: bc, pk: pk, pv: pv, subgroups: ns, shape: shape)
                case .dq:
                    smem = coopmatDqSharedBytes(br: br, bc: bc, pk: pk, pv: pv)
                case .dkdv:
                    smem = coopmatDkdvSharedBytes(br: br, bc: bc, pk: pk, pv: pv)
                }
                guard smem <= caps.maxComputeSharedMemoryBytes else { continue }
                var tiling = AttentionTiling(br: br, bc: bc, subgroupSize: sg, workgroupSize: ns * sg, sharedBytes: smem,
                                             rowsPerSubgroup: shape.m, scoreLanes: lanesPerRow, quadLanes: 0, separateKV: true,
                                             kind: kind, matrix: shape)
                (tiling.paddedHeadDim, tiling.paddedHeadDimV) = (pk, pv)
                return tiling
            }
        }
        return nil
    }

    /// Loop iterations per streamed tile and once, counted as `loopIterations` does, with every
    /// cooperative-matrix load, store and multiply-add weighted as `matrixOpIterations` loop
    /// iterations (what a device that emulates them, like lavapipe, may spend on each).
    func coopmatLoopIterations(shape: CooperativeMatrixShape) -> (perTile: Int, once: Int) {
        // Counted at the wider padded width (an upper bound for every product).
        let d = max(paddedHeadDim, paddedHeadDimV)
        let wg = workgroupSize, d8 = d / 8, ns = workgroupSize / subgroupSize
        let w = Self.matrixOpIterations(shape, subgroupSize: subgroupSize)
        let streamed = kind == .dkdv ? br : bc, owned = kind == .dkdv ? bc : br
        let passes = kind == .forward ? 1 : kind == .dq ? 2 : 3  // products per score element
        let tpr = scoreLanes, rpl = max(1, shape.m / subgroupSize), cpl = streamed / tpr
        let shuffles = 2 * (Int.bitWidth - 1 - max(tpr, 1).leadingZeroBitCount)
        let load = (streamed * d8 + wg - 1) / wg + (streamed + wg - 1) / wg
        let scores = passes * (streamed / shape.n) * (2 + (d / shape.k) * (1 + 2 * w) + w)
        let softmax = passes * rpl * (3 + 2 * cpl + shuffles + shape.n / tpr)
        let products = passes * ((1 + streamed / shape.k) * (1 + w) + (d / shape.n) * (2 + w + (streamed / shape.k) * (1 + 2 * w)))
        let perTile = load + scores + softmax + products + 4
        let once = 2 * (owned * d8 + wg - 1) / wg + 2 * (d / shape.k) * (1 + w) + rpl * (1 + shape.n / tpr) + w
            + 2 * (d / shape.n) * (1 + 2 * w + (shape.m * shape.n + subgroupSize - 1) / subgroupSize) + 64 + ns
        return (perTile, once)
    }

    /// Loop iterations charged per cooperative-matrix operation. Mesa 26's lavapipe, the one
    /// CPU device with cooperative matrices, unrolls them (a 4100-tile forward ran in one
    /// invocation and matched the reference), so one each is already conservative.
    static func matrixOpIterations(_ shape: CooperativeMatrixShape, subgroupSize: Int) -> Int { 1 }
}
