import VulkanCompute
import VkAttnShaders

/// How a GLA call runs its chunk products on cooperative matrices (Shaders/scan/*_coopmat.comp):
/// the square shape, the subgroups of the output kernel and the rows the state kernel stages at
/// a time. The shared-memory formulas mirror the shaders' declarations.
struct GLACoopmat: Hashable {
    let shape: CooperativeMatrixShape
    let subgroupSize: Int
    /// Subgroups of the output kernel (each owns chunk / M / subgroups row blocks).
    let outputSubgroups: Int
    /// Subgroups of the state kernel.
    let stateSubgroups: Int
    /// Rows the state kernel stages at a time.
    let stateRows: Int
    /// Subgroups of the gradients kernel, or nil when its tiles do not fit (then the scalar
    /// gradients kernel runs, and `gradsSkipped` says why).
    let gradsSubgroups: Int?

    var gradsSkipped: String { "its tiles do not fit \(sharedLimit) bytes of shared memory" }
    let sharedLimit: Int

    var m: Int { shape.m }

    /// The output kernel: the chunk's v rows and a state slice (16-bit, rows of Dv + 8), and per
    /// subgroup two [M][Dk + 8] 16-bit tiles, an M x (M + 4) fp32 tile, an M x (M + 8) 16-bit
    /// tile and a word.
    static func outputSharedBytes(chunk: Int, dk: Int, dv: Int, m: Int, subgroups: Int) -> Int {
        2 * chunk * (dv + 8) + 2 * m * (dv + 8) + subgroups * (2 * 2 * m * (dk + 8) + 4 * m * (m + 4) + 2 * m * (m + 8) + 4)
    }

    /// The gradients kernel: the chunk's v and dO rows and an S and a G slice (16-bit, rows of
    /// Dv + 8), and per subgroup two [M][Dk + 8] 16-bit tiles, two M x (M + 4) fp32 tiles, an
    /// M x (M + 8) 16-bit tile and two words.
    static func gradsSharedBytes(chunk: Int, dk: Int, dv: Int, m: Int, subgroups: Int) -> Int {
        2 * 2 * chunk * (dv + 8) + 2 * 2 * m * (dv + 8)
            + subgroups * (2 * 2 * m * (dk + 8) + 2 * 4 * m * (m + 4) + 2 * m * (m + 8) + 8)
    }

    /// The state kernel: `rows` rows of Dk + 8 and of Dv + 8, 16-bit.
    static func stateSharedBytes(rows: Int, dk: Int, dv: Int) -> Int { 2 * rows * (dk + 8 + dv + 8) }

    /// The layout for this problem on `device`, or why the cooperative-matrix kernels cannot run.
    static func choose(device: Device, input: DType, chunk: Int, dk: Int, dv: Int) -> Result<GLACoopmat, CooperativeMatrix.Unavailable> {
        guard input == .f16 else {
            return .failure(CooperativeMatrix.Unavailable("\(input) inputs (the GLA cooperative-matrix kernels take f16; bf16 is never narrowed)"))
        }
        let caps = device.capabilities
        let sg = caps.subgroupSize
        let maxWG = min(256, caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0])
        let shared = caps.maxComputeSharedMemoryBytes
        func layout(_ s: CooperativeMatrixShape) -> GLACoopmat? {
            let m = s.m
            guard s.n == m, s.k == m, dk % m == 0, dv % m == 0, chunk % m == 0 else { return nil }
            guard let ns = [4, 2, 1].first(where: { ns in
                (chunk / m) % ns == 0 && ns * sg <= maxWG && outputSharedBytes(chunk: chunk, dk: dk, dv: dv, m: m, subgroups: ns) <= shared
            }) else { return nil }
            guard let rows = [chunk, 64, 32, 16, 8].first(where: { $0 % m == 0 && $0 <= chunk && stateSharedBytes(rows: $0, dk: dk, dv: dv) <= shared })
            else { return nil }
            // The state kernel's subgroups share its Dk/M x Dv/M tiles evenly: every subgroup runs
            // as many matrix operations (lavapipe needs it; see Shaders/scan/gla_coopmat.glsl).
            let tiles = (dk / m) * (dv / m)
            let stateSubgroups = [4, 2, 1].first { tiles % $0 == 0 && $0 * sg <= maxWG } ?? 1
            let grads = [4, 2, 1].first { ns in
                (chunk / m) % ns == 0 && ns * sg <= maxWG && gradsSharedBytes(chunk: chunk, dk: dk, dv: dv, m: m, subgroups: ns) <= shared
            }
            return GLACoopmat(shape: s, subgroupSize: sg, outputSubgroups: ns, stateSubgroups: stateSubgroups, stateRows: rows,
                              gradsSubgroups: grads, sharedLimit: shared, uniformMatrixOps: caps.driverName == "llvmpipe")
        }
        let result = CooperativeMatrix.shape(device: device, input: input, shader: Shaders.scanGlaOutputCoopmatF16) { layout($0) != nil }
        switch result {
        case .failure(let why):
            return .failure(why)
        case .success(let shape):
            guard let chosen = layout(shape) else {
                return .failure(CooperativeMatrix.Unavailable("no square shape fits Dk \(dk), Dv \(dv) and \(chunk)-row chunks"))
            }
            return .success(chosen)
        }
    }

    /// Whether every subgroup must run as many matrix operations (lavapipe; see
    /// Shaders/scan/gla_coopmat.glsl).
    let uniformMatrixOps: Bool

    /// Specialization of a cooperative-matrix GLA kernel (ids of Shaders/scan/gla_*_coopmat.comp).
    /// `mode`: the state kernel's MODE (its rows are RB), nil for the output and gradient
    /// kernels (rows CH).
    func specialization(workgroup: Int, gate: Int, mode: Int?, rows: Int, dk: Int, dv: Int) -> [String: SpecializationValue] {
        var spec: [String: SpecializationValue] = [
            "local_size_x": .int(workgroup), "GATE": .int(gate), "DK": .int(dk), "DV": .int(dv), "MM": .int(m),
            "SG": .int(subgroupSize), "UNIFORM_MATRIX_OPS": .bool(uniformMatrixOps)]
        if let mode {
            spec["MODE"] = .int(mode)
            spec["RB"] = .int(rows)
        } else {
            spec["CH"] = .int(rows)
        }
        return spec
    }
}

extension GLACoopmat {
    /// The gradients kernel for dq, dk, dv of type `output`.
    func gradsKernel(device: Device, subgroups: Int, gate: Int, chunk: Int, dk: Int, dv: Int, output: DType) throws -> Kernel {
        let rolled = FlashAttention.rolledCooperativeLoops(device)
        let shader = output == .f32 ? (rolled ? Shaders.scanGlaGradsCoopmatF16o32Cpu : Shaders.scanGlaGradsCoopmatF16o32)
            : (rolled ? Shaders.scanGlaGradsCoopmatF16Cpu : Shaders.scanGlaGradsCoopmatF16)
        return try device.kernel(KernelDescriptor(
            shader: shader, bindings: 11,
            specialization: specialization(workgroup: subgroups * subgroupSize, gate: gate, mode: nil, rows: chunk, dk: dk, dv: dv),
            requiredSubgroupSize: device.enabled.subgroupSizeControl ? subgroupSize : nil, fullSubgroups: true))
    }
}

extension GLAPlan {
    /// The state-contribution kernel (MODE 0 forward, 1 backward) and its grid.
    package func stateContributions(mode: Int) throws -> (kernel: Kernel, groups: (x: Int, y: Int, z: Int)) {
        if let cm = coopmat {
            let wg = cm.stateSubgroups * cm.subgroupSize
            let shader = FlashAttention.rolledCooperativeLoops(device) ? Shaders.scanGlaStateCoopmatF16Cpu : Shaders.scanGlaStateCoopmatF16
            let kernel = try device.kernel(KernelDescriptor(
                shader: shader, bindings: 5,
                specialization: cm.specialization(workgroup: wg, gate: gateMode, mode: mode, rows: cm.stateRows, dk: Dk, dv: Dv),
                requiredSubgroupSize: device.enabled.subgroupSizeControl ? cm.subgroupSize : nil, fullSubgroups: true))
            return (kernel, grid(groups: B * H * NC))
        }
        return (try kernel(stateShader, bindings: 5, mode: mode), grid(invocations: B * H * NC * Dk * Dv, workgroup: 64))
    }

    /// The forward's output kernel for outputs of `output` type, and its workgroup size.
    package func outputKernel(output: DType) throws -> Kernel {
        if let cm = coopmat {
            let wg = cm.outputSubgroups * cm.subgroupSize
            let rolled = FlashAttention.rolledCooperativeLoops(device)
            let shader = output == .f32 ? (rolled ? Shaders.scanGlaOutputCoopmatF16o32Cpu : Shaders.scanGlaOutputCoopmatF16o32)
                : (rolled ? Shaders.scanGlaOutputCoopmatF16Cpu : Shaders.scanGlaOutputCoopmatF16)
            return try device.kernel(KernelDescriptor(
                shader: shader, bindings: 7,
                specialization: cm.specialization(workgroup: wg, gate: gateMode, mode: nil, rows: C, dk: Dk, dv: Dv),
                requiredSubgroupSize: device.enabled.subgroupSizeControl ? cm.subgroupSize : nil, fullSubgroups: true))
        }
        return try kernel(variant(Shaders.scanGlaOutputF32, f16: Shaders.scanGlaOutputF16, f16o32: Shaders.scanGlaOutputF16o32,
                                  bf16: Shaders.scanGlaOutputBf16, bf16o32: Shaders.scanGlaOutputBf16o32, output: output),
                          bindings: 7, workgroup: 128)
    }
}
