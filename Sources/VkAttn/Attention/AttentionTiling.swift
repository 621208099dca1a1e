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

    public var workgroupSize: Int { (kind == .dkdv ? bc : br) * threadsPerRow }
    let kind: Kind

    enum Kind: Hashable { case forward, dq, dkdv }

    public var description: String { "Br=\(br) Bc=\(bc) tpr=\(threadsPerRow) smem=\(sharedBytes)B" }

    /// Shared memory of the forward kernel: Q tile (br x (D+1)), one K-or-V tile
    /// (bc x (D+1)), probabilities (br x (bc+1)); fp32.
    static func forwardSharedBytes(br: Int, bc: Int, d: Int) -> Int {
        4 * (br * (d + 1) + bc * (d + 1) + br * (bc + 1))
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
    static func choose(_ kind: Kind, headDim d: Int, device: Device, maxTile: Int? = nil) throws -> AttentionTiling {
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
                case .forward: smem = forwardSharedBytes(br: br, bc: bc, d: d)
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
