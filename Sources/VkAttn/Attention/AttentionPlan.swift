import VulkanCompute

/// A forward (or decode) attention call planned once for fixed shapes on one device: the
/// checks, the tile and kernel choice, the split of the key range and the side buffers
/// (cu_seqlens, block mask) are made when the plan is; `encode` checks only that its tensors
/// are the planned ones and records. Make one per shape and reuse it across steps, as a
/// serving loop does; `FlashAttention.forward` and `decode` make a plan per call.
///
/// Shapes and layouts as `FlashAttention`: dense Q [B, Sq, Hq, Dk], K [B, Sk, Hkv, Dk],
/// V [B, Sk, Hkv, Dv], O [B, Sq, Hq, Dv], LSE [B, Hq, Sq]; packed Q [totalQ, Hq, Dk],
/// K [totalK, Hkv, Dk], V [totalK, Hkv, Dv], O [totalQ, Hq, Dv], LSE [Hq, totalQ].
///
/// Sendable: every stored property is immutable and Sendable (the side buffers are only read
/// by the GPU).
public final class AttentionPlan: Sendable {
    /// The configuration planned for.
    public let attention: FlashAttention
    /// The device the plan's kernel and side buffers live on.
    public let device: Device
    /// The kernel chosen, as `AttentionOutput.path` reports it (e.g. `scalar-f32 Br32 Bc32
    /// wg64`, `decode split-kv x8 (512 keys) + merge, coopmat-f16 8x8x8 ...`).
    public let path: String
    /// Shapes of Q, K and LSE, and the input and output element types.
    public let qShape: [Int], kvShape: [Int], lseShape: [Int]
    /// Shapes of V (K's with Dv) and O (Q's with Dv).
    public let vShape: [Int], oShape: [Int]
    /// The type of Q (`inputType`), of K and V (`kvType`: Q's, or f16, bf16 or i8 under any
    /// Q), and of O (`outputType`).
    public let inputType: DType, kvType: DType, outputType: DType
    /// The paged cache's geometry, when K and V live in pages.
    public let pages: KVPages?
    /// Workgroup columns over the key range (1: one pass writing O directly).
    public let splits: Int

    let op: String
    let geometry: AttentionGeometry
    /// The launch and its kernel; nil for an empty problem, which records no kernel.
    let launch: AttentionLaunch?
    let kernel: Kernel?
    let pack: Bool
    /// Cooperative-matrix kernels read their operands as 16-byte words.
    let alignedOperands: Bool

    /// Plans `attention` for tensors like `q`, `k`, `v` (their shapes, type and device).
    /// - Parameters:
    ///   - attention: mask, scale, softcap, output type, kernel preference.
    ///   - op: the op name errors carry (`attention.forward`, `attention.decode`).
    ///   - q: a Q of the planned shape (also K and V); zero sizes make a plan that records no
    ///     kernel (`path` says `empty (no kernel)`).
    ///   - layout: dense or packed variable-length.
    ///   - decode: split the key range for a long cache (`decodeSplits` or the device's count).
    /// - Throws: `VkAttnError` for any shape, type, layout or option the op does not take.
    init(_ attention: FlashAttention, op: String, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout,
         scales: (k: Tensor, v: Tensor)? = nil, pages: KVPages? = nil, decode: Bool, decodeSplits requested: Int?) throws {
        let device = q.device
        let g = try AttentionGeometry.resolveCache(op: op, q: q, k: k, v: v, layout: layout, scales: scales, pages: pages)
        let (scale, softcap) = try attention.checkOptions(op: op, g)
        let outputType = try attention.outputType(op: op, input: g.dtype)
        let pack = g.groupSize > 1 && attention.mask.blocks == nil
        if let requested, requested < 1 {
            throw VkAttnError.invalidValue(op: op, operand: "splits", reason: "\(requested) must be at least 1")
        }
        if g.isEmpty {  // no queries, heads or keys: no kernel (AttentionEmpty.swift)
            (self.attention, self.device, self.op, self.geometry, self.launch, self.kernel, self.pack) = (attention, device, op, g, nil, nil, pack)
            (self.qShape, self.kvShape, self.lseShape, self.vShape, self.oShape) = (g.qShape, g.kvShape, g.lseShape, g.vShape, g.oShape)
            (self.inputType, self.outputType, self.splits, self.alignedOperands, self.path) = (g.dtype, outputType, 1, false, emptyInputPath)
            (self.kvType, self.pages) = (g.kvType, pages)
            return
        }
        let tiling = try attention.tiling(.forward, op: op, geometry: g,
                                          shader: FlashAttention.forwardShader(input: g.dtype, output: outputType, cooperative: true),
                                          operands: [("Q", q), ("K", k), ("V", v)], device: device,
                                          rows: decode ? g.maxSq * (pack ? g.groupSize : 1) : nil)
        let keyTiles = max(1, (g.maxSk + tiling.bc - 1) / tiling.bc)
        let maxTiles = tiling.maxTilesPerInvocation(device: device)
        var split = (splits: 1, splitKeys: 0)
        var label: String?
        if decode {
            if let requested {
                // More splits than key tiles (or than the grid holds) would be clamped: say so instead.
                let limit = device.capabilities.maxWorkgroupCount[2] / max(1, g.batch)
                guard requested <= keyTiles, requested <= limit else {
                    throw VkAttnError.invalidValue(op: op, operand: "splits",
                                                   reason: "\(requested) is more than the \(min(keyTiles, limit)) splits of \(tiling.bc)-key tiles this cache allows")
                }
            }
            var plan = FlashAttention.decodePlan(g, tiling: tiling, pack: pack, device: device, requested: requested)
            // Never more keys per split than one invocation may walk (lavapipe's loop cap).
            if let maxTiles, plan.splitKeys > maxTiles * tiling.bc {
                let splitKeys = maxTiles * tiling.bc
                plan = FlashAttention.DecodePlan(splits: (g.maxSk + splitKeys - 1) / splitKeys, splitKeys: splitKeys)
            }
            split = (plan.splits, plan.splitKeys)
            label = plan.splits > 1 ? "decode split-kv" : nil
        } else if let maxTiles, keyTiles > maxTiles {
            // A key range longer than one invocation may walk (lavapipe) is split and merged exactly.
            let splitKeys = maxTiles * tiling.bc
            split = ((g.maxSk + splitKeys - 1) / splitKeys, splitKeys)
            label = "loop-capped split-kv"
        }
        let launch = try AttentionLaunch(op: op, geometry: g, mask: attention.mask, scale: scale, softcap: softcap, tiling: tiling,
                                         packGQA: pack, splits: split.splits, splitKeys: split.splitKeys,
                                         alibiSlopes: attention.alibiSlopes, sinks: attention.sinks, device: device)
        self.kernel = try attention.forwardKernel(launch, tiling: tiling, output: split.splits > 1 ? .f32 : outputType,
                                                  split: split.splits > 1, device: device)
        let kernelPath = attention.path(g, tiling: tiling, pack: pack)
        if let label {
            self.path = "\(label) x\(split.splits) (\(split.splitKeys) keys) + merge, " + kernelPath
        } else {
            self.path = (decode ? "decode single-pass " : "") + kernelPath
        }
        (self.attention, self.device, self.op, self.geometry, self.launch, self.pack) = (attention, device, op, g, launch, pack)
        (self.qShape, self.kvShape, self.lseShape) = (g.qShape, g.kvShape, g.lseShape)
        (self.vShape, self.oShape) = (g.vShape, g.oShape)
        (self.inputType, self.outputType, self.splits) = (g.dtype, outputType, split.splits)
        (self.kvType, self.pages) = (g.kvType, pages)
        self.alignedOperands = tiling.matrix != nil
    }

    /// Records the planned pass: O and LSE of `q` against `k`, `v` (rows that see no key get
    /// O = 0 and LSE = -inf).
    /// - Parameters:
    ///   - q: Q of `qShape` and `inputType` on the plan's device (so are `k`, of `kvShape`, and `v`, of `vShape`).
    ///   - k: K.
    ///   - v: V.
    ///   - outputs: O (`oShape`, `outputType`) and LSE (`lseShape`, f32) to write; nil allocates them.
    ///   - stream: a stream of the plan's device.
    /// - Returns: O, LSE and the plan's `path`.
    /// - Throws: `VkAttnError` naming the operand that is not what the plan was made for.
    public func encode(q: Tensor, k: Tensor, v: Tensor, into outputs: AttentionOutput? = nil, on stream: Stream) throws -> AttentionOutput {
        try encode(q: q, k: k, v: v, scales: nil, into: outputs, on: stream)
    }

    /// `encode` with the int8 cache's scales (`kvType` i8).
    package func encode(q: Tensor, k: Tensor, v: Tensor, scales: (k: Tensor, v: Tensor)?, into outputs: AttentionOutput?,
                on stream: Stream) throws -> AttentionOutput {
        guard stream.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "stream") }
        guard (scales != nil) == (kvType == .i8) else {
            throw VkAttnError.invalidValue(op: op, operand: "scales", reason: kvType == .i8 ? "missing: the plan is for an int8 cache" : "given, but the plan is for a \(kvType) cache")
        }
        for (name, t, shape) in [("Q", q, qShape), ("K", k, kvShape), ("V", v, vShape)] {
            try t.expect(op: op, name, shape: shape, dtype: name == "Q" ? inputType : kvType, device: device)
            try t.expectBindable(op: op, name)
            if alignedOperands && t.slice.offset % 16 != 0 {
                throw VkAttnError.invalidValue(op: op, operand: name, reason: "starts at byte \(t.slice.offset); the plan's cooperative-matrix kernel needs a multiple of 16")
            }
        }
        let out = try outputs ?? AttentionOutput(o: device.makeTensor(shape: oShape, dtype: outputType),
                                                 lse: device.makeTensor(shape: lseShape, dtype: .f32))
        try out.o.expect(op: op, "O", shape: oShape, dtype: outputType, device: device)
        try out.lse.expect(op: op, "LSE", shape: lseShape, dtype: .f32, device: device)
        try out.o.expectBindable(op: op, "O")
        guard let kernel, let launch else {
            try geometry.recordEmptyForward(o: out.o, lse: out.lse, sinks: attention.sinks, on: stream)
            return AttentionOutput(o: out.o, lse: out.lse, path: path)
        }
        let g = geometry
        var scaleSlices = [launch.cuQ, launch.cuQ]  // unread placeholders unless int8
        var kSlice = k.slice, vSlice = v.slice
        if let scales {
            for (name, t, shape) in [("K scales", scales.k, kvShape), ("V scales", scales.v, vShape)] {
                try t.expect(op: op, name, shape: Array(shape.dropLast()) + [(shape[shape.count - 1] + 31) / 32], dtype: .f32, device: device)
                try t.expectBindable(op: op, name)
            }
            scaleSlices = [scales.k.slice, scales.v.slice]
            (kSlice, vSlice) = (try k.wordSlice(op: op, "K"), try v.wordSlice(op: op, "V"))
        }
        let sideBuffers = [launch.cuQ, launch.cuK, launch.maskOffsets, launch.maskColumns, launch.alibiSlopes, launch.sinks]
            + scaleSlices + [launch.blockTable]
        let heads = pack ? g.headsKV : g.headsQ
        if splits == 1 {
            try stream.dispatch(kernel, bindings: [q.slice, kSlice, vSlice, out.o.slice, out.lse.slice] + sideBuffers,
                                push: launch.pushConstants, groups: (launch.rowTiles, heads, g.batch))
            return AttentionOutput(o: out.o, lse: out.lse, path: path)
        }
        // `splits` workgroups per row block write fp32 partials that AttentionMerge combines.
        let partialO = try device.makeTensor(shape: [splits] + oShape, dtype: .f32)
        let partialLSE = try device.makeTensor(shape: [splits] + lseShape, dtype: .f32)
        try partialO.expectBindable(op: op, "partial O")
        try stream.dispatch(kernel, bindings: [q.slice, kSlice, vSlice, partialO.slice, partialLSE.slice] + sideBuffers,
                            push: launch.pushConstants, groups: (launch.rowTiles, heads, g.batch * splits))
        try stream.barrier()
        try AttentionMerge.encode(partialO: partialO.slice, partialLSE: partialLSE.slice, o: out.o, lse: out.lse,
                                  splits: splits, headDim: g.headDimV, heads: g.headsQ,
                                  seqQ: g.isPacked ? g.totalQ : g.maxSq, totalQ: g.totalQ, packed: g.isPacked,
                                  sinks: launch.hasSinks ? launch.sinks : nil, on: stream)
        return AttentionOutput(o: out.o, lse: out.lse, path: path)
    }
}

extension FlashAttention {
    /// Plans the forward pass for tensors like `q`, `k`, `v` (see `AttentionPlan`).
    /// - Parameters:
    ///   - q: a Q of the shape to plan for (its type and device too); `k`, `v` likewise.
    ///   - k: K.
    ///   - v: V.
    ///   - layout: dense or packed variable-length.
    ///   - pages: the block table of K and V in pages; nil for contiguous K and V.
    /// - Returns: the plan; its `encode` records the pass.
    /// - Throws: `VkAttnError` for shapes, types, layouts or options the op does not take.
    public func forwardPlan(q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout = .dense, pages: KVPages? = nil) throws -> AttentionPlan {
        try AttentionPlan(self, op: "attention.forward", q: q, k: k, v: v, layout: layout, pages: pages, decode: false, decodeSplits: nil)
    }

    /// Plans decode against a K/V cache (see `decode` and `AttentionPlan`).
    /// - Parameters:
    ///   - q: the query rows (few per sequence).
    ///   - kCache: K of the cache; `vCache` likewise.
    ///   - vCache: V of the cache.
    ///   - layout: dense or packed variable-length (each sequence its own cache length).
    ///   - pages: the block table of a paged cache; nil for a contiguous one.
    ///   - splits: workgroup columns over the key range; nil lets the device decide.
    /// - Returns: the plan.
    /// - Throws: `VkAttnError`, as `decode`.
    public func decodePlan(q: Tensor, kCache: Tensor, vCache: Tensor, layout: AttentionLayout = .dense,
                           pages: KVPages? = nil, splits: Int? = nil) throws -> AttentionPlan {
        try AttentionPlan(self, op: "attention.decode", q: q, k: kCache, v: vCache, layout: layout, pages: pages,
                          decode: true, decodeSplits: splits)
    }

    /// `decodePlan` for an int8 cache: `kCache` and `vCache` hold i8 values, `scales` their
    /// per-block f32 scales (KVQuantization's layout).
    package func decodePlan(q: Tensor, kCache: Tensor, vCache: Tensor, layout: AttentionLayout = .dense,
                            pages: KVPages? = nil, splits: Int? = nil, scales: (k: Tensor, v: Tensor)?) throws -> AttentionPlan {
        try AttentionPlan(self, op: "attention.decode", q: q, k: kCache, v: vCache, layout: layout, scales: scales, pages: pages,
                          decode: true, decodeSplits: splits)
    }

    /// `forwardPlan` for an int8 K/V (see `decodePlan(q:kCache:vCache:layout:pages:splits:scales:)`).
    package func forwardPlan(q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout = .dense, pages: KVPages? = nil,
                             scales: (k: Tensor, v: Tensor)?) throws -> AttentionPlan {
        try AttentionPlan(self, op: "attention.forward", q: q, k: k, v: v, layout: layout, scales: scales, pages: pages,
                          decode: false, decodeSplits: nil)
    }
}
