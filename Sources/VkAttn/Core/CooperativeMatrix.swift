import VulkanCompute
import VkAttnShaders

/// Which arithmetic a matrix-product kernel runs on.
public enum KernelPreference: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    /// Cooperative matrices (tensor cores) where this build and the device can run them, else
    /// the scalar kernels; the op's `path` says which ran and, for scalar, why.
    case automatic = "auto"
    /// The scalar (FMA-lane) kernels, everywhere.
    case scalar
    /// Cooperative matrices, or a `VkAttnError.unsupported` naming what is missing.
    case cooperativeMatrix = "coopmat"

    /// The raw value: `auto`, `scalar` or `coopmat` (as the bench's `--kernel` options spell them).
    public var description: String { rawValue }
}

/// The choice between a KHR cooperative-matrix kernel and its scalar counterpart, made once per
/// call from this build (did glslc accept `GL_KHR_cooperative_matrix`), the device (extension,
/// features, the shapes it reports), the inputs' type and `VKATTN_DISABLE_COOPMAT`.
public enum CooperativeMatrix {
    /// True when `VKATTN_DISABLE_COOPMAT` is set to anything but `0` or empty.
    public static var disabledByEnvironment: Bool {
        guard let value = EnvironmentKey.value(of: EnvironmentKey.disableCooperativeMatrix) else { return false }
        return !value.isEmpty && value != "0"
    }

    /// Why this build and `device` cannot run cooperative-matrix kernels on `input` at all (the
    /// environment, the build's glslc, the device's extension, features and shapes), or nil when
    /// they can; each op may still refuse a particular problem (its `path` says why).
    /// - Parameters:
    ///   - device: The device to ask about.
    ///   - input: The matrix inputs' type: f16, or bf16 (which needs VK_KHR_shader_bfloat16).
    /// - Returns: The reason, or nil when cooperative matrices can run.
    public static func unavailableReason(device: Device, input: DType = .f16) -> String? {
        let build = Shaders.toolchain.acceptsKHRCooperativeMatrix
            ? nil : "this build's glslc (\(Shaders.toolchain.glslcVersion)) does not accept GL_KHR_cooperative_matrix"
        if case let .failure(why) = shape(device: device, input: input, buildReason: build) { return why.reason }
        return nil
    }

    /// The component name the device's shape list uses for a 16-bit input type.
    static func componentName(_ dtype: DType) -> String? {
        switch dtype {
        case .f16: return "f16"
        case .bf16: return "bf16"
        default: return nil
        }
    }

    /// The subgroup-scope shape (A, B of `input`, C and result f32) this device offers for
    /// `shader`, with M, N, K multiples of 8 (the kernels move 16-byte words of 16-bit elements)
    /// that `fits` accepts; the largest M*N*K wins, then the squarest. Otherwise why none.
    static func shape(device: Device, input: DType, shader: ShaderSource,
                      fits: (CooperativeMatrixShape) -> Bool = { _ in true }) -> Result<CooperativeMatrixShape, Unavailable> {
        shape(device: device, input: input, buildReason: shader.unavailableReason, fits: fits)
    }

    /// `shape(device:input:shader:fits:)` with the build's verdict given directly (nil: built).
    static func shape(device: Device, input: DType, buildReason: String?,
                      fits: (CooperativeMatrixShape) -> Bool = { _ in true }) -> Result<CooperativeMatrixShape, Unavailable> {
        if disabledByEnvironment { return .failure(Unavailable("disabled by \(EnvironmentKey.disableCooperativeMatrix)")) }
        if let reason = buildReason { return .failure(Unavailable(reason)) }
        guard let component = componentName(input) else {
            return .failure(Unavailable("\(input) inputs (cooperative-matrix kernels take 16-bit inputs)"))
        }
        let enabled = device.enabled, caps = device.capabilities
        guard enabled.cooperativeMatrixKHR else { return .failure(Unavailable("\(device.label) offers no VK_KHR_cooperative_matrix")) }
        guard enabled.vulkanMemoryModel else { return .failure(Unavailable("\(device.label) lacks vulkanMemoryModel")) }
        guard enabled.shaderFloat16, enabled.storageBuffer16BitAccess else {
            return .failure(Unavailable("\(device.label) lacks shaderFloat16 or 16-bit storage"))
        }
        // bf16 is never narrowed to f16 (its range is larger): without bf16 matrix types the
        // scalar kernels widen its words exactly.
        if input == .bf16 && !enabled.shaderBFloat16CooperativeMatrix {
            return .failure(Unavailable("\(device.label) offers no bf16 cooperative matrices (VK_KHR_shader_bfloat16); bf16 is never narrowed to f16"))
        }
        // SPIR-V before 1.6 needs full subgroups for cooperative matrices (VUID-10770).
        guard enabled.computeFullSubgroups else { return .failure(Unavailable("\(device.label) lacks computeFullSubgroups")) }
        guard caps.minSubgroupSize == caps.maxSubgroupSize || enabled.subgroupSizeControl else {
            return .failure(Unavailable("\(device.label) varies its subgroup size without subgroup size control"))
        }
        // Mesa 26.2.6's lavapipe advertises 8x8x8 at every vector width but crashes (SIGBUS)
        // running even a single 8x8x8 multiply-add with 16-lane subgroups
        // (LP_NATIVE_VECTOR_WIDTH=512); 8 lanes work.
        if caps.driverName == "llvmpipe" && caps.subgroupSize != 8 {
            return .failure(Unavailable("lavapipe crashes in cooperative-matrix kernels with \(caps.subgroupSize)-lane subgroups (only 8 lanes work)"))
        }
        let offered = caps.cooperativeMatrixKHR.filter {
            $0.aType == component && $0.bType == component && $0.cType == "f32" && $0.resultType == "f32" && $0.scope == "subgroup"
                && $0.m % 8 == 0 && $0.n % 8 == 0 && $0.k % 8 == 0
        }
        guard !offered.isEmpty else {
            return .failure(Unavailable("\(device.label) offers no \(component) x \(component) + f32 subgroup shape with M, N, K multiples of 8"))
        }
        let usable = offered.filter(fits)
        guard let best = usable.max(by: { a, b in
            let (va, vb) = (a.m * a.n * a.k, b.m * b.n * b.k)
            return va != vb ? va < vb : abs(a.m - a.n) > abs(b.m - b.n)
        }) else {
            let list = offered.map { "\($0.m)x\($0.n)x\($0.k)" }.joined(separator: ", ")
            return .failure(Unavailable("no offered shape (\(list)) fits this problem"))
        }
        return .success(best)
    }

    /// Why a cooperative-matrix kernel does not run.
    public struct Unavailable: Error, Hashable, Sendable, CustomStringConvertible {
        /// What is missing: the environment, the build, the device or a shape that fits.
        public let reason: String
        init(_ reason: String) { self.reason = reason }
        /// The reason.
        public var description: String { reason }
    }

    /// Shape text for paths: `8x8x8`.
    static func text(_ s: CooperativeMatrixShape) -> String { "\(s.m)x\(s.n)x\(s.k)" }
}
