import VulkanCompute

/// Tile sizes of the attention kernels for one device and head dimension. The shared-memory
/// formula here is the one the shaders' `shared` declarations add up to (see
/// Shaders/attention/*.comp): a change to either must change both.
public struct AttentionTiling: Hashable, Sendable, CustomStringConvertible {
    /// Query rows per workgroup (forward, dQ) or per inner step (dK/dV).
    public let br: Int
    /// Keys per tile (forward, dQ) or per workgroup (dK/dV).
    public let bc: Int
    /// Invocations that share one row (forward, dQ) or one key (dK/dV); reductions over them
    /// are subgroup shuffles, so this never exceeds the device's minimum subgroup size.
    public let threadsPerRow: Int
    public let sharedBytes: Int
    /// Forward only: rows per subgroup, and how a subgroup's lanes split over keys in
    /// S = Q K^T (`microKeys` lanes along keys) and over dim quads in O += P V (`microDims`).
    public let microRows: Int
    public let microKeys: Int
    public let microDims: Int
    let forwardWorkgroup: Int
    /// Forward only: whether K and V have their own shared buffers (else they take turns).
    public let separateKV: Bool

    public var workgroupSize: Int { kind == .forward ? forwardWorkgroup : (kind == .dkdv ? bc : br) * threadsPerRow }
    let kind: Kind

    init(br: Int, bc: Int, threadsPerRow: Int, sharedBytes: Int, kind: Kind,
         microRows: Int = 1, microKeys: Int = 1, microDims: Int = 1, forwardWorkgroup: Int = 0, separateKV: Bool = false) {
        self.br = br
        self.bc = bc
        self.threadsPerRow = threadsPerRow
        self.sharedBytes = sharedBytes
        self.kind = kind
        self.microRows = microRows
        self.microKeys = microKeys
        self.microDims = microDims
        self.forwardWorkgroup = forwardWorkgroup
        self.separateKV = separateKV
    }

    enum Kind: Hashable { case forward, dq, dkdv }

    public var description: String {
        kind == .forward ? "Br=\(br) Bc=\(bc) rows/subgroup=\(microRows) wg=\(forwardWorkgroup) \(separateKV ? "K|V" : "K,V") smem=\(sharedBytes)B"
                         : "Br=\(br) Bc=\(bc) tpr=\(threadsPerRow) smem=\(sharedBytes)B"
    }

    /// Shared memory of the forward kernel, in vec4 rows padded by one vec4: the Q tile
    /// (br rows of D/4 + 1), the K tile (bc rows), the V tile (bc rows, or one vec4 when V
    /// reuses the K buffer) and the P tile (br rows of bc/4 + 1).
    static func forwardSharedBytes(br: Int, bc: Int, d: Int, separateKV: Bool) -> Int {
        let rq = d / 4 + 1, pq = bc / 4 + 1
        return 16 * (br * rq + bc * rq + (separateKV ? bc * rq : 1) + br * pq)
    }

    /// The forward kernel's subgroup requirements: subgroup arithmetic in compute shaders and
    /// one known subgroup size (pinned with subgroup size control where the device varies it).
    /// Returns the size to require of the pipeline, or nil when the device has only one.
    static func forwardSubgroupRequirement(_ device: Device) throws -> Int? {
        let caps = device.capabilities
        guard caps.subgroupInCompute, caps.subgroupOperations.contains("arithmetic") else {
            throw VkAttnError.unsupported(op: "attention", reason: "\(device.label) lacks subgroup arithmetic in compute shaders")
        }
        if caps.minSubgroupSize == caps.maxSubgroupSize { return nil }
        guard device.enabled.subgroupSizeControl else {
            throw VkAttnError.unsupported(op: "attention", reason: "\(device.label) varies its subgroup size (\(caps.minSubgroupSize)...\(caps.maxSubgroupSize)) without subgroup size control")
        }
        return caps.subgroupSize
    }

    /// `rows` (when small, as in decode) caps the row block near the rows there are, so that
    /// a workgroup does not compute mostly padding.
    static func chooseForward(headDim d: Int, device: Device, maxTile: Int?, rows: Int? = nil) throws -> AttentionTiling {
        let caps = device.capabilities
        let sg = try forwardSubgroupRequirement(device) ?? caps.subgroupSize
        let maxWG = min(256, caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0])
        let blocks = [(64, 64), (64, 32), (32, 64), (32, 32), (32, 16), (16, 64), (16, 32), (16, 16),
                      (8, 64), (8, 32), (8, 16), (8, 8), (4, 64), (4, 32), (4, 16)]
        var rowCap = Int.max
        if let rows, rows < 32 {
            rowCap = 4
            while rowCap < rows { rowCap *= 2 }
        }
        for (br, bc) in blocks where br <= rowCap {
            if let maxTile, br > maxTile || bc > maxTile { continue }
            for separate in [true, false] {
                let smem = forwardSharedBytes(br: br, bc: bc, d: d, separateKV: separate)
                guard smem <= caps.maxComputeSharedMemoryBytes else { continue }
                for subgroups in [8, 4, 2, 1] where br % subgroups == 0 && subgroups * sg <= maxWG {
                    let rm = br / subgroups
                    // Lane splits must divide the subgroup: the largest power of two that
                    // divides both (D = 96 has 24 quads: 8 lanes along quads).
                    let keyLanes = min(sg, bc)
                    var quadLanes = 1
                    while quadLanes * 2 <= sg && (d / 4) % (quadLanes * 2) == 0 { quadLanes *= 2 }
                    guard rm % (sg / keyLanes) == 0, rm % (sg / quadLanes) == 0, (d / 4) % quadLanes == 0 else { continue }
                    let rs = rm / (sg / keyLanes), cn = bc / keyLanes
                    let rz = rm / (sg / quadLanes), qz = (d / 4) / quadLanes
                    guard rs * cn <= 64, rz * qz * 4 <= 128, cn <= 8 else { continue }
                    return AttentionTiling(br: br, bc: bc, threadsPerRow: sg, sharedBytes: smem, kind: .forward,
                                           microRows: rm, microKeys: keyLanes, microDims: quadLanes, forwardWorkgroup: subgroups * sg,
                                           separateKV: separate)
                }
            }
        }
        throw VkAttnError.unsupported(op: "attention", reason: "no forward tile of head dim \(d) fits \(caps.maxComputeSharedMemoryBytes) bytes of shared memory and subgroups of \(sg) on \(device.label)")
    }

    /// Shared memory of the dQ kernel: Q and dO tiles (br x (D+1) each), K and V tiles
    /// (bc x (D+1) each), dS (br x (bc+1)), LSE and Delta (br each); fp32.
    static func dqSharedBytes(br: Int, bc: Int, d: Int) -> Int {
        4 * (2 * br * (d + 1) + 2 * bc * (d + 1) + br * (bc + 1) + 2 * br)
    }

    /// Shared memory of the dK/dV kernel: as dQ plus the P tile (br x (bc+1)).
    static func dkdvSharedBytes(br: Int, bc: Int, d: Int) -> Int {
        dqSharedBytes(br: br, bc: bc, d: d) + 4 * br * (bc + 1)
    }

    static func threadsPerRow(_ device: Device) -> Int {
        var t = 1
        while t * 2 <= min(8, device.capabilities.minSubgroupSize) { t *= 2 }
        return t
    }

    /// The largest tiles (preferring more lanes per row, then more rows, then more keys) that
    /// fit the device: its shared memory, its workgroup limits and its subgroup size.
    static func choose(_ kind: Kind, headDim d: Int, device: Device, maxTile: Int? = nil, rows: Int? = nil) throws -> AttentionTiling {
        if kind == .forward { return try chooseForward(headDim: d, device: device, maxTile: maxTile, rows: rows) }
        let caps = device.capabilities
        let candidates: [(Int, Int)] = kind == .dkdv
            ? [(16, 32), (16, 16), (8, 16), (8, 8), (4, 8), (4, 4), (2, 4), (2, 2)]
            : [(32, 64), (32, 32), (16, 64), (16, 32), (16, 16), (8, 32), (8, 16), (8, 8), (8, 4), (4, 4), (4, 2), (2, 2)]
        var tpr = threadsPerRow(device)
        while tpr >= 1 {
            for (br, bc) in candidates {
                if let maxTile, br > maxTile || bc > maxTile { continue }
                let rowsPerGroup = kind == .dkdv ? bc : br
                let smem: Int
                switch kind {
                case .forward: smem = 0
                case .dq: smem = dqSharedBytes(br: br, bc: bc, d: d)
                case .dkdv: smem = dkdvSharedBytes(br: br, bc: bc, d: d)
                }
                guard smem <= caps.maxComputeSharedMemoryBytes,
                      rowsPerGroup * tpr <= min(caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0], 256),
                      kind == .dkdv ? br % tpr == 0 : bc % tpr == 0, d % tpr == 0 else { continue }
                return AttentionTiling(br: br, bc: bc, threadsPerRow: tpr, sharedBytes: smem, kind: kind)
            }
            tpr /= 2
        }
        throw VkAttnError.unsupported(op: "attention", reason: "no tile of head dim \(d) fits \(caps.maxComputeSharedMemoryBytes) bytes of shared memory on \(device.label)")
    }

    /// Forward (and decode) tiles for `headDim` on `device`.
    public static func forward(headDim: Int, device: Device) throws -> AttentionTiling {
        try choose(.forward, headDim: headDim, device: device)
    }
}
