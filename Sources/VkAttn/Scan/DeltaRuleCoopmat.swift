import VulkanCompute
import VkAttnShaders

/// How a delta-rule call runs its chunk products on cooperative matrices: the WY form's U =
/// T diag(beta) V and Wk = T diag(beta exp(g)) K (Shaders/delta/wy_coopmat.comp, after prep.comp
/// made T), and W = U - Wk S_0, Q S_0, P = Q K^T and P W forward, W, R = P^T dO and
/// G = Q^T diag(exp(g)) dO - Wk^T R backward (output_coopmat.comp), and the backward's products
/// with the states, dW = R + diag(exp(g_n - g)) K dS_1, dWk = -dW S_0^T, W dS_1^T and dO S_0^T
/// (grads_state_coopmat.comp), and its C x C products over the head dimensions, Q K^T, dO W^T,
/// dW V^T, dWk K^T and K K^T (grads_gram_coopmat.comp), before grads.comp: the square shape and
/// the subgroups of the kernels. The shared-memory formulas mirror the shaders' declarations.
/// T's forward substitution, the chunk maps, the carry and grads.comp's sums over rows stay
/// scalar.
struct DeltaRuleCoopmat: Hashable {
    let shape: CooperativeMatrixShape
    let subgroupSize: Int
    /// Subgroups of the output kernel (each owns chunk / M / subgroups row blocks).
    let subgroups: Int
    /// Whether every subgroup must run as many matrix operations (lavapipe; see
    /// Shaders/delta/output_coopmat.comp).
    let uniformMatrixOps: Bool

    var m: Int { shape.m }

    /// The kernel's shared memory (the backward's, MODE 1, the larger): the chunk's W (or R)
    /// rows, its dO rows (MODE 1) and a state slice (16-bit, rows of Dv + 8), per subgroup two
    /// [M][Dk + 8] 16-bit tiles, an M x (M + 4) fp32 tile, an M x (M + 8) 16-bit tile and a
    /// word, and the chunk's decays and block scales.
    static func sharedBytes(chunk: Int, dk: Int, dv: Int, m: Int, subgroups: Int, backward: Bool = true) -> Int {
        2 * (backward ? 2 : 1) * chunk * (dv + 8) + 2 * m * (dv + 8)
            + subgroups * (2 * 2 * m * (dk + 8) + 4 * m * (m + 4) + 2 * m * (m + 8) + 4) + 4 * chunk + 4 * (chunk / m)
    }

    /// wy_coopmat.comp's shared memory: the chunk's v and k rows (16-bit, rows of Dv + 8 and
    /// Dk + 8), per subgroup an M x (M + 4) fp32 tile and two M x (M + 8) 16-bit tiles, and two
    /// words per row.
    static func wySharedBytes(chunk: Int, dk: Int, dv: Int, m: Int, subgroups: Int) -> Int {
        2 * chunk * (dv + 8 + dk + 8) + subgroups * (4 * m * (m + 4) + 2 * 2 * m * (m + 8)) + 2 * 4 * chunk
    }

    /// grads_state_coopmat.comp's shared memory: two state slices (16-bit, rows of Dv + 8), per
    /// subgroup an [M][Dk + 8] and three [M][Dv + 8] 16-bit tiles, an M x (M + 4) fp32 tile and
    /// two words, and a word per row.
    static func gradsStateSharedBytes(chunk: Int, dk: Int, dv: Int, m: Int, subgroups: Int) -> Int {
        2 * 2 * m * (dv + 8) + subgroups * (2 * m * (dk + 8) + 3 * 2 * m * (dv + 8) + 4 * m * (m + 4) + 8) + 4 * chunk
    }

    /// grads_gram_coopmat.comp's shared memory: per subgroup two [M][max(Dk, Dv) + 8] 16-bit
    /// tiles and an M x (M + 4) fp32 tile.
    static func gramSharedBytes(dk: Int, dv: Int, m: Int, subgroups: Int) -> Int {
        subgroups * (2 * 2 * m * (max(dk, dv) + 8) + 4 * m * (m + 4))
    }

    /// Loop iterations of one invocation of the kernel, over-estimated (lavapipe caps them at
    /// 65535): phase 1's tiles and state slices, the block pairs of phase 2, the backward's G
    /// tiles over the row blocks.
    static func loopIterations(chunk: Int, dk: Int, dv: Int, m: Int, subgroups: Int, subgroupSize sg: Int) -> Int {
        let wg = subgroups * sg, blocks = chunk / m, perSubgroup = blocks / subgroups
        let tile = (m * m + sg - 1) / sg, rows = (m * dk + sg - 1) / sg
        let phase1 = perSubgroup * (2 * rows + (dk / m) * ((m * dv + wg - 1) / wg + dv / m) + (dv / m) * 3 * tile)
        let phase2 = perSubgroup * blocks * (rows + dk / m + 2 * tile + dv / m) + perSubgroup * (dv / m) * 2 * tile
        let tiles = (dk / m) * (dv / m)
        let phase3 = (tiles + subgroups - 1) / subgroups * (blocks * 3 * tile + tile)
        // wy_coopmat.comp: its block pairs, fewer than phase 2's. grads_gram_coopmat.comp: five
        // products per block pair, each staging two tiles (twice the fp32 ones).
        let width = max(dk, dv), pairs = perSubgroup * blocks
        let gram = pairs * 5 * (3 * ((m * width + sg - 1) / sg) + width / m + tile)
        return max(phase1 + phase2 + phase3 + (dk * dv + chunk * dv) / wg + chunk, gram)
    }

    /// The layout for this problem on `device`, or why the cooperative-matrix kernel cannot run.
    /// - Parameters:
    ///   - device: The device that will run the call.
    ///   - input: q's type: only f16 runs on cooperative matrices (bf16 is never narrowed).
    ///   - chunk: Rows per chunk (a multiple of the shape's M).
    ///   - dk: The key dimension (a multiple of M).
    ///   - dv: The value dimension (a multiple of M).
    static func choose(device: Device, input: DType, chunk: Int, dk: Int, dv: Int) -> Result<DeltaRuleCoopmat, CooperativeMatrix.Unavailable> {
        guard input == .f16 else {
            return .failure(CooperativeMatrix.Unavailable("\(input) inputs (the delta rule's cooperative-matrix kernels take f16; bf16 is never narrowed)"))
        }
        let caps = device.capabilities
        let sg = caps.subgroupSize
        let maxWG = min(256, caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0])
        let shared = caps.maxComputeSharedMemoryBytes
        func layout(_ s: CooperativeMatrixShape) -> DeltaRuleCoopmat? {
            let m = s.m
            guard s.n == m, s.k == m, dk % m == 0, dv % m == 0, chunk % m == 0 else { return nil }
            guard let ns = [4, 2, 1].first(where: { ns in
                (chunk / m) % ns == 0 && ns * sg <= maxWG && sharedBytes(chunk: chunk, dk: dk, dv: dv, m: m, subgroups: ns) <= shared
                    && wySharedBytes(chunk: chunk, dk: dk, dv: dv, m: m, subgroups: ns) <= shared
                    && gradsStateSharedBytes(chunk: chunk, dk: dk, dv: dv, m: m, subgroups: ns) <= shared
                    && gramSharedBytes(dk: dk, dv: dv, m: m, subgroups: ns) <= shared
                    && (caps.type != .cpu || loopIterations(chunk: chunk, dk: dk, dv: dv, m: m, subgroups: ns, subgroupSize: sg) < 60_000)
            }) else { return nil }
            return DeltaRuleCoopmat(shape: s, subgroupSize: sg, subgroups: ns, uniformMatrixOps: caps.driverName == "llvmpipe")
        }
        switch CooperativeMatrix.shape(device: device, input: input, shader: Shaders.deltaOutputCoopmatF16, fits: { layout($0) != nil }) {
        case .failure(let why):
            if why.reason.hasPrefix("no offered shape") {
                return .failure(CooperativeMatrix.Unavailable(
                    "no square shape divides Dk \(dk), Dv \(dv) and \(chunk)-row chunks within \(shared) bytes of shared memory"
                        + (caps.type == .cpu ? " and the loop cap" : "") + " (\(why.reason))"))
            }
            return .failure(why)
        case .success(let shape):
            guard let chosen = layout(shape) else {
                return .failure(CooperativeMatrix.Unavailable("no square shape fits Dk \(dk), Dv \(dv) and \(chunk)-row chunks"))
            }
            return .success(chosen)
        }
    }

    /// The kernel of `mode` (0: the forward's o of `output` type, f16 or f32; 1: the backward's
    /// W, R and G), one workgroup of `subgroups` subgroups per (chunk, head).
    func kernel(device: Device, mode: Int, chunk: Int, dk: Int, dv: Int, output: DType) throws -> Kernel {
        let rolled = FlashAttention.rolledCooperativeLoops(device)
        let shader = output == .f32 ? (rolled ? Shaders.deltaOutputCoopmatF16o32Cpu : Shaders.deltaOutputCoopmatF16o32)
            : (rolled ? Shaders.deltaOutputCoopmatF16Cpu : Shaders.deltaOutputCoopmatF16)
        let spec: [String: SpecializationValue] = [
            "local_size_x": .int(subgroups * subgroupSize), "CH": .int(chunk), "DK": .int(dk), "DV": .int(dv), "MM": .int(m),
            "SG": .int(subgroupSize), "UNIFORM_MATRIX_OPS": .bool(uniformMatrixOps), "MODE": .int(mode)]
        return try device.kernel(KernelDescriptor(
            shader: shader, bindings: 12, specialization: spec,
            requiredSubgroupSize: device.enabled.subgroupSizeControl ? subgroupSize : nil, fullSubgroups: true))
    }

    /// The backward's products with the states (grads_state_coopmat.comp), one workgroup of
    /// `subgroups` subgroups per (chunk, head).
    func gradsStateKernel(device: Device, chunk: Int, dk: Int, dv: Int) throws -> Kernel {
        let shader = FlashAttention.rolledCooperativeLoops(device) ? Shaders.deltaGradsStateCoopmatF16Cpu : Shaders.deltaGradsStateCoopmatF16
        let spec: [String: SpecializationValue] = [
            "local_size_x": .int(subgroups * subgroupSize), "CH": .int(chunk), "DK": .int(dk), "DV": .int(dv), "MM": .int(m),
            "SG": .int(subgroupSize)]
        return try device.kernel(KernelDescriptor(
            shader: shader, bindings: 11, specialization: spec,
            requiredSubgroupSize: device.enabled.subgroupSizeControl ? subgroupSize : nil, fullSubgroups: true))
    }

    /// The backward's C x C products over the head dimensions (grads_gram_coopmat.comp), one
    /// workgroup of `subgroups` subgroups per (chunk, head).
    func gramKernel(device: Device, chunk: Int, dk: Int, dv: Int) throws -> Kernel {
        let shader = FlashAttention.rolledCooperativeLoops(device) ? Shaders.deltaGradsGramCoopmatF16Cpu : Shaders.deltaGradsGramCoopmatF16
        let spec: [String: SpecializationValue] = [
            "local_size_x": .int(subgroups * subgroupSize), "CH": .int(chunk), "DK": .int(dk), "DV": .int(dv), "MM": .int(m),
            "SG": .int(subgroupSize), "UNIFORM_MATRIX_OPS": .bool(uniformMatrixOps)]
        return try device.kernel(KernelDescriptor(
            shader: shader, bindings: 9, specialization: spec,
            requiredSubgroupSize: device.enabled.subgroupSizeControl ? subgroupSize : nil, fullSubgroups: true))
    }

    /// The WY form's products (wy_coopmat.comp), one workgroup of `subgroups` subgroups per
    /// (chunk, head).
    func wyKernel(device: Device, chunk: Int, dk: Int, dv: Int) throws -> Kernel {
        let shader = FlashAttention.rolledCooperativeLoops(device) ? Shaders.deltaWyCoopmatF16Cpu : Shaders.deltaWyCoopmatF16
        let spec: [String: SpecializationValue] = [
            "local_size_x": .int(subgroups * subgroupSize), "CH": .int(chunk), "DK": .int(dk), "DV": .int(dv), "MM": .int(m),
            "SG": .int(subgroupSize), "UNIFORM_MATRIX_OPS": .bool(uniformMatrixOps)]
        return try device.kernel(KernelDescriptor(
            shader: shader, bindings: 8, specialization: spec,
            requiredSubgroupSize: device.enabled.subgroupSizeControl ? subgroupSize : nil, fullSubgroups: true))
    }
}
