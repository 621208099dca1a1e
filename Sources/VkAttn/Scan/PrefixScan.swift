import VulkanCompute
import VkAttnShaders

/// Prefix scan (inclusive or exclusive) of f32, i32 or u32 values on the device: sums, or
/// running maxima of f32, over a 1-D array or along the last dimension of a batched tensor
/// (every row scanned on its own), optionally segmented.
///
/// Shapes: `input` [n] or [..., n] (the leading dimensions are rows); `output` the same shape
/// and dtype, or, for an exclusive scan of a 1-D input, [n + 1] to receive the total as its
/// last element (CSR row pointers from row counts). Arrays larger than one storage-buffer
/// binding (`maxStorageBufferRange`) are scanned in bindable chunks, the carry passing from
/// each chunk to the next.
///
/// ```swift
/// try PrefixScan(op: .add, exclusive: true).encode(input: counts, output: rowPointers, on: stream)
/// ```
public struct PrefixScan: Hashable, Sendable {
    /// The operator: sum or maximum.
    public var op: ScanOperator
    /// Exclusive (element i gets the combination of elements before it; the first gets the
    /// identity) or inclusive (elements up to and including i).
    public var exclusive: Bool
    /// Forces an algorithm; nil uses `ScanAlgorithm.preferred(for:)` of the stream's device.
    public var algorithm: ScanAlgorithm?
    /// Overrides the launch shape; nil uses `Tuning.preferred(for:)`.
    public var tuning: Tuning?

    /// - Parameters:
    ///   - op: The operator.
    ///   - exclusive: Exclusive or inclusive.
    ///   - algorithm: An algorithm to force; nil lets the device decide.
    ///   - tuning: A launch shape to force; nil lets the device decide.
    public init(op: ScanOperator = .add, exclusive: Bool = false, algorithm: ScanAlgorithm? = nil, tuning: Tuning? = nil) {
        self.op = op
        self.exclusive = exclusive
        self.algorithm = algorithm
        self.tuning = tuning
    }

    /// The op name in errors.
    public static let opName = "scan.prefix"

    /// The path `encode` takes on `device`.
    /// - Parameter device: The device that will run the scan.
    /// - Returns: The forced path, or the device's preferred one.
    public func resolvedAlgorithm(on device: Device) -> ScanAlgorithm {
        algorithm ?? ScanAlgorithm.preferred(for: device)
    }

    /// The path name the bench reports: the path, the load width and the tile.
    /// - Parameter device: The device that will run the scan.
    /// - Returns: E.g. `single-pass-lookback/u64x2/tile2048`.
    public func path(on device: Device) -> String {
        let t = tuning ?? Tuning.preferred(for: device)
        return "\(resolvedAlgorithm(on: device).rawValue)/\(t.wideLoads ? "u64x2" : "u32x4")/tile\(t.tileElements)"
    }

    /// Records the scan into `stream`. Throws `VkAttnError` before recording anything when an
    /// operand is wrong. In-place scans (`output` overlapping `input`) need
    /// `.reduceThenScan`: the single pass's fallback may re-read a predecessor's input.
    /// - Parameters:
    ///   - stream: The stream to record into; the tensors live on its device.
    ///   - input: [n] or [rows, ..., n]: f32, i32 or u32 for sums, f32 for maxima. Any
    ///     dimension may be zero: then no kernel is recorded (an exclusive `[0]` scan into a
    ///     `[1]` output writes the identity, `[0]` for sums, with one fill).
    ///   - output: The input's shape and type; [n + 1] for an exclusive 1-D scan that also
    ///     writes the total.
    ///   - segments: Where segments start; rows are always separate.
    /// - Returns: What was recorded (path, tiles, chunks; the fallback count once synchronized).
    /// - Throws: ``VkAttnError`` for a shape, type, device, alignment or size the scan does not
    ///   take, an output overlapping the input on the single pass, or a tuning the device cannot
    ///   run.
    @discardableResult
    public func encode(input: Tensor, output: Tensor, segments: ScanSegments = .none, on stream: Stream) throws -> ScanDispatch {
        let device = stream.device
        if input.isEmpty { return try encodeEmpty(input: input, output: output, segments: segments, on: stream) }
        let plan = try ScanPlan(scan: self, device: device, input: input, output: output, segments: segments)
        return try plan.encode(on: stream)
    }

    /// `encode` on buffer slices holding `count` elements of `dtype` (1-D). `output` holds
    /// `count` elements, or `count + 1` for an exclusive scan with the total at the end.
    /// - Parameters:
    ///   - stream: The stream to record into.
    ///   - input: At least `count` elements.
    ///   - output: `count` elements, or more for an exclusive scan with the total.
    ///   - count: The elements to scan; zero records no kernel (an exclusive scan with the total
    ///     then writes the identity, 0 for sums, as its one element: a fill).
    ///   - dtype: Their type.
    /// - Returns: What was recorded.
    /// - Throws: ``VkAttnError`` for a negative count or slices too small, and the errors of
    ///   ``encode(input:output:segments:on:)``.
    @discardableResult
    public func encode(input: BufferSlice, output: BufferSlice, count: Int, dtype: DType, on stream: Stream) throws -> ScanDispatch {
        guard count >= 0 else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "count", reason: "must not be negative, got \(count)")
        }
        let outCount = output.byteCount / dtype.byteSize
        let bytes = try Checked.product(op: Self.opName, operand: "count", count, dtype.byteSize)
        guard input.byteCount >= bytes else {
            throw VkAttnError.shapeMismatch(op: Self.opName, operand: "input", expected: "\(bytes) bytes", actual: "\(input.byteCount) bytes")
        }
        let wantsTotal = exclusive && outCount > count
        let x = try Tensor(input.buffer, shape: [count], dtype: dtype, byteOffset: input.offset)
        let y = try Tensor(output.buffer, shape: [wantsTotal ? count + 1 : count], dtype: dtype, byteOffset: output.offset)
        guard output.byteCount >= y.byteCount else {
            throw VkAttnError.shapeMismatch(op: Self.opName, operand: "output", expected: "\(y.byteCount) bytes", actual: "\(output.byteCount) bytes")
        }
        return try encode(input: x, output: y, on: stream)
    }
}

extension PrefixScan {
    /// Launch shape of the tile kernels.
    public struct Tuning: Hashable, Sendable {
        /// Invocations per workgroup: a power of two, a multiple of the subgroup size.
        public var workgroupSize: Int
        /// Consecutive elements per invocation: 4, 8, ..., 32.
        public var itemsPerInvocation: Int
        /// Polls of an unpublished predecessor before the single pass reduces it itself.
        public var lookbackPolls: Int
        /// Moves data as 64-bit words (needs shaderInt64): on lavapipe every 32-bit access is a
        /// scalar load with a bounds check, so halving their number doubles the bandwidth.
        public var wideLoads: Bool
        /// Tiles one workgroup may take in turn (from the ticket counter): lavapipe pays a large
        /// setup per workgroup, and caps the loop iterations of an invocation (65535 over the
        /// whole dispatch), so it wants a few dozen; GPUs one.
        public var tilesPerWorkgroup: Int
        /// Tests: every tile treats its nearest `forcedFallbacks` predecessors (within the
        /// chunk) as unpublished and reduces them from the input.
        public var forcedFallbacks: Int

        /// A launch shape; checked against the device when the scan is encoded.
        /// - Parameters:
        ///   - workgroupSize: Invocations per workgroup.
        ///   - itemsPerInvocation: Consecutive elements per invocation.
        ///   - lookbackPolls: Polls before the single pass reduces a predecessor itself.
        ///   - wideLoads: 64-bit words (needs shaderInt64).
        ///   - tilesPerWorkgroup: Tiles each workgroup takes in turn.
        ///   - forcedFallbacks: Predecessors each tile treats as unpublished (tests).
        public init(workgroupSize: Int, itemsPerInvocation: Int, lookbackPolls: Int, wideLoads: Bool,
                    tilesPerWorkgroup: Int, forcedFallbacks: Int = 0) {
            self.workgroupSize = workgroupSize
            self.itemsPerInvocation = itemsPerInvocation
            self.lookbackPolls = lookbackPolls
            self.wideLoads = wideLoads
            self.tilesPerWorkgroup = tilesPerWorkgroup
            self.forcedFallbacks = forcedFallbacks
        }

        /// Elements per tile: workgroupSize x itemsPerInvocation.
        public var tileElements: Int { workgroupSize * itemsPerInvocation }

        /// Measured choices: on lavapipe (CPU) small workgroups with 32 items per invocation,
        /// short polls (a fallback costs one tile's loads) and 64-bit words; on GPUs 256
        /// invocations, long polls and 16-byte vectors.
        /// - Parameter device: The device that will run the scan.
        /// - Returns: The measured choice for its kind (CPU or GPU).
        public static func preferred(for device: Device) -> Tuning {
            let caps = device.capabilities
            let wg = min(256, caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0])
            if caps.type == .cpu {
                // Lavapipe runs every subgroup (8 lanes) of a workgroup through all of the tile's
                // code, masked, so the serial per-tile part is cheapest with few subgroups and
                // many items each.
                return Tuning(workgroupSize: min(64, wg), itemsPerInvocation: 32, lookbackPolls: 16,
                              wideLoads: device.enabled.shaderInt64, tilesPerWorkgroup: 32)
            }
            return Tuning(workgroupSize: wg, itemsPerInvocation: 16, lookbackPolls: 4096, wideLoads: false,
                          tilesPerWorkgroup: 1)
        }

        func validate(op: String, device: Device) throws {
            let caps = device.capabilities
            let wg = workgroupSize
            guard wg > 0, wg & (wg - 1) == 0, wg >= caps.maxSubgroupSize,
                  wg <= caps.maxWorkgroupInvocations, wg <= caps.maxWorkgroupSize[0] else {
                throw VkAttnError.invalidValue(op: op, operand: "tuning.workgroupSize",
                                               reason: "\(wg) must be a power of two in \(caps.maxSubgroupSize)...\(min(caps.maxWorkgroupInvocations, caps.maxWorkgroupSize[0]))")
            }
            guard itemsPerInvocation >= 4, itemsPerInvocation <= 32, itemsPerInvocation % 4 == 0 else {
                throw VkAttnError.invalidValue(op: op, operand: "tuning.itemsPerInvocation", reason: "\(itemsPerInvocation) must be 4, 8, ..., 32")
            }
            // Lavapipe's loop cap (65535 iterations per invocation) bounds the polls there.
            let maxPolls = caps.type == .cpu ? 64 : 1 << 24
            guard lookbackPolls >= 0, lookbackPolls <= maxPolls else {
                throw VkAttnError.invalidValue(op: op, operand: "tuning.lookbackPolls", reason: "\(lookbackPolls) must be in 0...\(maxPolls) on this device")
            }
            guard forcedFallbacks >= 0, forcedFallbacks <= 1 << 16 else {
                throw VkAttnError.invalidValue(op: op, operand: "tuning.forcedFallbacks", reason: "\(forcedFallbacks) must be in 0...65536")
            }
            guard tilesPerWorkgroup >= 1, tilesPerWorkgroup <= 256 else {
                throw VkAttnError.invalidValue(op: op, operand: "tuning.tilesPerWorkgroup", reason: "\(tilesPerWorkgroup) must be in 1...256")
            }
            if wideLoads && !device.enabled.shaderInt64 {
                throw VkAttnError.unsupported(op: op, reason: "tuning.wideLoads needs shaderInt64, which \(device.label) lacks")
            }
        }
    }
}

/// What `PrefixScan.encode` recorded: the algorithm, the tiling, and (after the stream is
/// synchronized) how many predecessor tiles the single pass reduced itself.
public struct ScanDispatch: Sendable {
    /// The path recorded.
    public let algorithm: ScanAlgorithm
    /// Tiles over the whole input.
    public let tiles: Int
    /// Bindable chunks the input was split into (1 below `maxStorageBufferRange`).
    public let chunks: Int
    /// The status words; nil for an empty scan, which recorded no kernel.
    let status: Buffer?
    let statsWord: Int

    /// Single pass: how often a tile reduced an unpublished predecessor from the input
    /// (read after `synchronize()`). Zero for reduce-then-scan and for an empty scan.
    /// - Returns: The number of fallback reductions.
    /// - Throws: The errors of reading the status buffer.
    public func fallbacks() throws -> Int {
        guard let status else { return 0 }
        return Int(try status.read(UInt32.self, count: 1, at: statsWord * 4)[0])
    }
}

extension PrefixScan {
    /// An input with no elements: the operands are checked as for any scan, no kernel is
    /// recorded, and an exclusive 1-D scan with the total (output `[1]`) gets the operator's
    /// identity (0 for sums, -inf for maxima) written by one fill (vkCmdFillBuffer): the
    /// exclusive scan of nothing with its total is `[0]`, the row pointers of a matrix with no rows.
    func encodeEmpty(input: Tensor, output: Tensor, segments: ScanSegments, on stream: Stream) throws -> ScanDispatch {
        let op = Self.opName
        let device = stream.device
        guard !input.shape.isEmpty else {
            throw VkAttnError.shapeMismatch(op: op, operand: "input", expected: "[n] or [..., n]", actual: "\(input.shape)")
        }
        guard self.op.dtypes.contains(input.dtype) else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "input", expected: self.op.dtypes.map(\.rawValue).joined(separator: "|"),
                                            actual: input.dtype.rawValue)
        }
        guard input.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "input") }
        let writesTotal = exclusive && input.shape == [0] && output.shape == [1]
        try output.expect(op: op, "output", shape: writesTotal ? [1] : input.shape, dtype: input.dtype, device: device)
        switch segments {
        case .none: break
        case let .headFlags(f), let .offsets(f):
            let name = { if case .headFlags = segments { return "segments.headFlags" } else { return "segments.offsets" } }()
            guard f.dtype == .u32 || f.dtype == .i32 else {
                throw VkAttnError.dtypeMismatch(op: op, operand: name, expected: "u32|i32", actual: f.dtype.rawValue)
            }
            guard f.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: name) }
        }
        if writesTotal {
            let identity: UInt32 = self.op == .max ? Float(-Float.infinity).bitPattern : 0
            try stream.fill(output.slice, word: identity)
        }
        return ScanDispatch(algorithm: resolvedAlgorithm(on: device), tiles: 0, chunks: 0, status: nil, statsWord: 0)
    }
}
