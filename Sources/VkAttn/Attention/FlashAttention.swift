import VulkanCompute
import VkAttnShaders
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Exact attention that never materializes the Sq x Sk score matrix (FlashAttention-2), on
/// any Vulkan device: forward -> (O, LSE), backward -> (dQ, dK, dV), decode (split-KV), merge.
///
/// Shapes (see `AttentionLayout`): dense Q [B, Sq, Hq, Dk], K [B, Sk, Hkv, Dk],
/// V [B, Sk, Hkv, Dv], O [B, Sq, Hq, Dv]; LSE [B, Hq, Sq] fp32, natural log. Packed
/// variable-length: Q [totalQ, Hq, Dk], K [totalK, Hkv, Dk], V [totalK, Hkv, Dv],
/// O [totalQ, Hq, Dv]; LSE [Hq, totalQ]. Any head dims: Dk in 1...576 and Dv in 1...512 for
/// the forward and decode (Dk != Dv as in MLA), the backward where shared memory holds a tile; widths the
/// tiles cannot take directly are padded with zeros inside the kernels (`path` shows
/// `pad 59->64`). Hq a multiple of Hkv (MHA, GQA, MQA); f32, f16 or bf16 storage with fp32
/// accumulation.
///
/// The value is the configuration (mask, scale, softcap, output type); it is Hashable so it
/// can key caches. Every input is checked before anything is dispatched; errors are
/// `VkAttnError`s naming the op and the operand.
public struct FlashAttention: Hashable, Sendable {
    /// Which keys each query sees: causal, sliding window, block-sparse, or all.
    public var mask: AttentionMask
    /// Softmax scale; nil means 1 / sqrt(Dk).
    public var scale: Float?
    /// Logit soft cap: logits become cap * tanh(logit / cap); nil means none.
    public var softcap: Float?
    /// ALiBi slopes, one per query head: query i's logit for key j gains
    /// -slope * |j - diagonal(i)| (natural units, after the soft cap; the diagonal is the mask's,
    /// bottom-right aligned by default, as FlashAttention-2 does). nil means none.
    public var alibiSlopes: [Float]?
    /// Attention sinks, one logit per query head (natural units): each row's softmax
    /// denominator gains exp(sink), which takes weight from the keys and adds nothing to O.
    /// LSE then includes the sink (a row that sees no key gets O = 0 and LSE = sink), and the
    /// backward also returns dL/dsink (`AttentionGradients.dsinks`). nil means none.
    public var sinks: [Float]?
    /// Element type of O; nil means the input type. f16 inputs may ask for f32 outputs
    /// (partials that are merged later should not be rounded).
    public var outputDType: DType?
    /// Cooperative-matrix (tensor-core) kernels or scalar ones; `.automatic` takes cooperative
    /// matrices for 16-bit inputs where the build and the device allow (see `path`).
    public var preference: KernelPreference

    /// - Parameters:
    ///   - mask: causal, sliding-window and block-sparse masking (`AttentionMask`).
    ///   - scale: the softmax scale; nil means 1 / sqrt(D).
    ///   - softcap: logit soft cap (cap * tanh(logit / cap)); nil means none.
    ///   - alibiSlopes: ALiBi slopes, one per query head; nil means none.
    ///   - sinks: sink logits, one per query head; nil means none.
    ///   - outputDType: the type of O (and of the backward's gradients); nil means the inputs'.
    ///   - preference: which kernels run (cooperative matrices or scalar).
    /// An attention configuration; nothing is checked until a call sees the tensors.
    public init(mask: AttentionMask = .none, scale: Float? = nil, softcap: Float? = nil, alibiSlopes: [Float]? = nil,
                sinks: [Float]? = nil, outputDType: DType? = nil, preference: KernelPreference = .automatic) {
        self.mask = mask
        self.scale = scale
        self.softcap = softcap
        self.alibiSlopes = alibiSlopes
        self.sinks = sinks
        self.outputDType = outputDType
        self.preference = preference
    }

    /// The forward pass. Returns O (in `outputDType`) and LSE; rows that see no key get
    /// O = 0 and LSE = -inf. `into` may supply the output tensors.
    ///
    /// On devices that cap an invocation's loop iterations (lavapipe), a key range longer than
    /// one invocation may walk is split across workgroups whose fp32 partials are merged
    /// exactly, as decode does; `path` says so.
    /// - Parameters:
    ///   - q: Q: [B, Sq, Hq, D] dense or [totalQ, Hq, D] packed; f32, f16 or bf16. B, Sq, Hq
    ///     (and Sk, Hkv) may be zero, D may not: no kernel is recorded; when there are query rows
    ///     but no keys, fills write O = 0 and LSE = -inf (rows that see no key), else O and LSE
    ///     are empty. A packed layout with no sequences has `cuSeqlens` of `[0]`.
    ///   - k: K: [B, Sk, Hkv, Dk] or [totalK, Hkv, Dk] (or [pages, pageSize, Hkv, Dk] with
    ///     `pages`), on Q's device, of Q's type or (mixed precision) f16 or bf16 under any Q.
    ///   - v: V: K's shape with Dv, K's type.
    ///   - layout: Dense, or packed variable-length with the sequences' offsets (paged K/V take
    ///     the packed layout: queries over a cached prefix are chunked prefill).
    ///   - pages: The block table of K and V in pages; nil for contiguous K and V.
    ///   - outputs: O (Q's shape with Dv, `outputDType`) and LSE (f32) to write; nil allocates them.
    ///   - stream: A stream of Q's device; the pass runs when it is submitted.
    /// - Returns: O, LSE and the path of the kernel that ran.
    /// - Throws: ``VkAttnError`` naming the operand or option that the op does not take
    ///   (shapes, types, devices, head dim, heads, mask, scale, softcap, a requested kernel the
    ///   device cannot run), before anything is recorded.
    public func forward(q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout = .dense, pages: KVPages? = nil,
                        into outputs: AttentionOutput? = nil, on stream: Stream) throws -> AttentionOutput {
        guard q.device === stream.device else { throw VkAttnError.deviceMismatch(op: "attention.forward", operand: "stream") }
        return try forwardPlan(q: q, k: k, v: v, layout: layout, pages: pages).encode(q: q, k: k, v: v, into: outputs, on: stream)
    }

    /// The ALiBi paper's slopes for `heads` heads: the geometric sequence 2^(-8/n), 2^(-16/n), ...
    /// for n the largest power of two up to `heads`, then every other slope of the sequence for
    /// 2n for the remaining heads.
    /// - Parameter heads: The query heads (at least 1).
    /// - Returns: One slope per head.
    public static func alibiSlopes(heads: Int) -> [Float] {
        guard heads > 0 else { return [] }
        func geometric(_ n: Int) -> [Double] { (1...n).map { exp2(-8.0 * Double($0) / Double(n)) } }
        let base = 1 << (Int.bitWidth - 1 - heads.leadingZeroBitCount)
        var slopes = geometric(base)
        if base < heads {
            slopes += geometric(2 * base).enumerated().filter { $0.offset % 2 == 0 }.map(\.element).prefix(heads - base)
        }
        return slopes.map(Float.init)
    }

    func forwardKernel(_ launch: AttentionLaunch, tiling: AttentionTiling, output: DType, split: Bool, device: Device) throws -> Kernel {
        let g = launch.geometry
        let shader: ShaderSource
        if g.kvType == g.dtype {
            shader = Self.forwardShader(input: g.dtype, output: output, cooperative: tiling.matrix != nil,
                                        rolled: Self.rolledCooperativeLoops(device))
        } else {
            shader = try Self.mixedForwardShader(op: launch.op, query: g.dtype, kv: g.kvType, output: output)
        }
        return try device.kernel(KernelDescriptor(
            shader: shader, bindings: 14,
            specialization: launch.specialization(workgroupSize: tiling.workgroupSize, split: split),
            requiredSubgroupSize: try AttentionTiling.subgroupRequirement(device),
            fullSubgroups: device.enabled.computeFullSubgroups))
    }

    /// CPU devices emulate cooperative matrices; their variants keep the loops around matrix
    /// operations rolled (Shaders/attention/coopmat.glsl), or compiling a kernel takes minutes.
    /// `VKATTN_COOPMAT_LOOPS=rolled|unrolled` overrides the choice.
    static func rolledCooperativeLoops(_ device: Device) -> Bool {
        switch EnvironmentKey.value(of: EnvironmentKey.cooperativeMatrixLoops) {
        case "rolled": return true
        case "unrolled": return false
        default: return device.capabilities.type == .cpu
        }
    }

    package func outputType(op: String, input: DType) throws -> DType {
        let o = outputDType ?? input
        guard o == input || (input.isHalfWidth && o == .f32) else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "outputDType", expected: input.isHalfWidth ? "\(input) or f32" : "f32", actual: o.rawValue)
        }
        return o
    }

    static func forwardShader(input: DType, output: DType, cooperative: Bool = false, rolled: Bool = false) -> ShaderSource {
        if cooperative {
            if input == .bf16 { return output == .f32 ? Shaders.attentionForwardCoopmatBf16o32 : Shaders.attentionForwardCoopmatBf16 }
            switch (output == .f32, rolled) {
            case (true, false): return Shaders.attentionForwardCoopmatF16o32
            case (true, true): return Shaders.attentionForwardCoopmatF16o32Cpu
            case (false, false): return Shaders.attentionForwardCoopmatF16
            case (false, true): return Shaders.attentionForwardCoopmatF16Cpu
            }
        }
        switch (input, output) {
        case (.f16, .f16): return Shaders.attentionForwardF16
        case (.f16, _): return Shaders.attentionForwardF16o32
        case (.bf16, .bf16): return Shaders.attentionForwardBf16
        case (.bf16, _): return Shaders.attentionForwardBf16o32
        default: return Shaders.attentionForwardF32
        }
    }

    /// The scalar forward variant for Q of one type and K/V of another (mixed precision, int8).
    static func mixedForwardShader(op: String, query: DType, kv: DType, output: DType) throws -> ShaderSource {
        func code(_ t: DType) -> String {
            switch t {
            case .f32: return "32"
            case .f16: return "16"
            case .bf16: return "bf16"
            default: return "8"
            }
        }
        let name = "attention/forward.q\(code(query))kv\(code(kv))" + (output != query ? "o32" : "")
        guard let shader = Shaders.named(name) else {
            throw VkAttnError.unsupported(op: op, reason: "no kernel takes Q \(query), K/V \(kv) and O \(output)")
        }
        return shader
    }

    /// What the block mask changes in the launch: per-head patterns, and GQA heads run unpacked.
    func blockMaskText(_ g: AttentionGeometry) -> String {
        guard let blocks = mask.blocks else { return "" }
        return (blocks.heads > 1 ? " blocks/head" : "") + (g.groupSize > 1 ? " unpacked-GQA(block mask)" : "")
    }

    func path(_ g: AttentionGeometry, tiling: AttentionTiling, pack: Bool) -> String {
        let geometry = "Br\(tiling.br) Bc\(tiling.bc) wg\(tiling.workgroupSize)" + (pack ? " packGQA" : "")
            + tiling.paddingText(headDim: g.headDim, headDimV: g.headDimV) + blockMaskText(g)
        if let shape = tiling.matrix {
            return "coopmat-\(g.dtype) \(CooperativeMatrix.text(shape)) " + geometry + (g.pages.map { " paged(\($0.pageSize))" } ?? "")
        }
        let types = g.kvType == g.dtype ? "\(g.dtype)" : "q\(g.dtype)-kv\(g.kvType)"
        return "scalar-\(types) " + geometry + (g.pages.map { " paged(\($0.pageSize))" } ?? "") + (tiling.separateKV ? "" : " kv-shared")
            + (tiling.cooperativeMatrixSkipped.map { " [no coopmat: \($0)]" } ?? "")
    }
}

/// The result of a forward pass: O and LSE, and which kernel variant produced them.
public struct AttentionOutput: Sendable {
    /// The attention output: Q's shape with V's head dim (Dv).
    public let o: Tensor
    /// The log-sum-exp of each query row's scaled logits (natural log, f32): [B, Hq, Sq] or
    /// [Hq, totalQ]. The backward needs it; partials merge by it.
    public let lse: Tensor
    /// The kernel variant (e.g. `scalar-f32 Br32 Bc32 tpr8`), reported by the bench.
    public let path: String

    /// Output tensors for `into:` (the path is filled in by the op).
    /// - Parameters:
    ///   - o: O, Q's shape with Dv, in the op's output type.
    ///   - lse: LSE, f32.
    ///   - path: A kernel description; empty for caller-made outputs.
    public init(o: Tensor, lse: Tensor, path: String = "") {
        self.o = o
        self.lse = lse
        self.path = path
    }
}
