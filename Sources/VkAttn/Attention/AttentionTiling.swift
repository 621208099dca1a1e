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

    /// Shared memory of both backward kernels: Q and dO tiles (br x (D+1) each), K and V tiles
    /// (bc x (D+1) each), P or dS (br x (bc+1)), LSE and D rows (br each); fp32.
    static func backwardSharedBytes(br: Int, bc: Int, d: Int) -> Int {
        4 * (2 * br * (d + 1) + 2 * bc * (d + 1) + br * (bc + 1) + 2 * br)
    }

    static func threadsPerRow(_ device: Device) -> Int {
        var t = 1
        while t * 2 <= min(8, device.capabilities.minSubgroupSize) { t *= 2 }
        return t
    }

    /// The largest tiles (preferring more rows, then more keys) that fit the device.
    static func choose(_ kind: Kind, headDim d: Int, device: Device, maxTile: Int? = nil) throws -> AttentionTiling {
        let caps = device.capabilities
        let tpr = threadsPerRow(device)
        let candidates: [(Int, Int)] = kind == .dkdv
            ? [(16, 32), (16, 16), (8, 16), (8, 8), (4, 8), (4, 4)]
            : [(32, 64), (32, 32), (16, 64), (16, 32), (16, 16), (8, 32), (8, 16), (8, 8), (4, 8), (4, 4)]
        for (br, bc) in candidates {
            if let maxTile, br > maxTile || bc > maxTile { continue }
            let rowsPerGroup = kind == .dkdv ? bc : br
            let smem = kind == .forward ? forwardSharedBytes(br: br, bc: bc, d: d) : backwardSharedBytes(br: br, bc: bc, d: d)
            guard smem <= caps.maxComputeSharedMemoryBytes,
                  rowsPerGroup * tpr <= min(caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0], 256),
                  bc % tpr == 0, br % tpr == 0 || kind != .dkdv, d % tpr == 0 else { continue }
            return AttentionTiling(br: br, bc: bc, threadsPerRow: tpr, sharedBytes: smem, kind: kind)
        }
        throw VkAttnError.unsupported(op: "attention", reason: "no tile of head dim \(d) fits \(caps.maxComputeSharedMemoryBytes) bytes of shared memory on \(device.label)")
    }

    /// Forward (and decode) tiles for `headDim` on `device`.
    public static func forward(headDim: Int, device: Device) throws -> AttentionTiling {
        try choose(.forward, headDim: headDim, device: device)
    }
}
