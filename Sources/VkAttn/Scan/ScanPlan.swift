import VulkanCompute
import VkAttnShaders

/// A validated prefix scan: operands checked, chunks and tiles laid out, kernels chosen.
/// Built before anything is recorded, so every error is thrown with the stream untouched.
struct ScanPlan {
    let scan: PrefixScan
    let device: Device
    let input: Tensor
    let output: Tensor
    let path: ScanAlgorithm
    let tuning: PrefixScan.Tuning
    let count: Int              // elements scanned
    let rowLength: Int?         // rows of a batched input restart the scan
    let flags: Tensor?          // head flags given by the caller
    let offsets: Tensor?        // segment starts given by the caller
    let writesTotal: Bool
    let chunkElements: Int
    let chunks: [(start: Int, count: Int, tileBase: Int, tiles: Int)]
    let totalTiles: Int

    static let op = PrefixScan.opName

    init(scan: PrefixScan, device: Device, input: Tensor, output: Tensor, segments: ScanSegments) throws {
        let op = Self.op
        self.scan = scan
        self.device = device
        self.input = input
        self.output = output
        guard let n = input.shape.last, n > 0 else {
            throw VkAttnError.shapeMismatch(op: op, operand: "input", expected: "[n] or [..., n] with n > 0", actual: "\(input.shape)")
        }
        guard scan.op.dtypes.contains(input.dtype) else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "input", expected: scan.op.dtypes.map(\.rawValue).joined(separator: "|"), actual: input.dtype.rawValue)
        }
        let count = input.elementCount
        self.count = count
        let wantsTotal = scan.exclusive && input.shape.count == 1 && output.shape == [n + 1]
        self.writesTotal = wantsTotal
        if !wantsTotal {
            try output.expect(op: op, "output", shape: input.shape, dtype: input.dtype, device: device)
        } else {
            try output.expect(op: op, "output", shape: [n + 1], dtype: input.dtype, device: device)
        }
        guard input.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "input") }
        self.rowLength = count > n ? n : nil

        switch segments {
        case .none:
            flags = nil
            offsets = nil
        case .headFlags(let f):
            guard f.elementCount == count, f.shape == input.shape || f.shape == [count] else {
                throw VkAttnError.shapeMismatch(op: op, operand: "segments.headFlags", expected: "\(input.shape) or [\(count)]", actual: "\(f.shape)")
            }
            guard f.dtype == .u32 || f.dtype == .i32 else {
                throw VkAttnError.dtypeMismatch(op: op, operand: "segments.headFlags", expected: "u32|i32", actual: f.dtype.rawValue)
            }
            guard f.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "segments.headFlags") }
            flags = f
            offsets = nil
        case .offsets(let o):
            guard o.shape.count == 1 else {
                throw VkAttnError.shapeMismatch(op: op, operand: "segments.offsets", expected: "[segments]", actual: "\(o.shape)")
            }
            guard o.dtype == .u32 || o.dtype == .i32 else {
                throw VkAttnError.dtypeMismatch(op: op, operand: "segments.offsets", expected: "u32|i32", actual: o.dtype.rawValue)
            }
            guard o.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "segments.offsets") }
            try o.expectBindable(op: op, "segments.offsets")
            guard count <= Int(UInt32.max) else {
                throw VkAttnError.tooLarge(op: op, operand: "input (with segments.offsets)", bytes: input.byteCount, limit: Int(UInt32.max) * input.dtype.byteSize)
            }
            flags = nil
            offsets = o
        }

        let path = scan.resolvedAlgorithm(on: device)
        self.path = path
        let tuning = scan.tuning ?? PrefixScan.Tuning.preferred(for: device)
        try tuning.validate(op: op, device: device)
        self.tuning = tuning

        // Offsets must be bindable: the device's alignment, and 16 bytes for the vector views.
        let alignment = max(16, device.capabilities.minStorageBufferOffsetAlignment)
        for (name, tensor) in [("input", input), ("output", output)] + (flags.map { [("segments.headFlags", $0)] } ?? []) {
            guard tensor.slice.offset % alignment == 0 else {
                throw VkAttnError.invalidValue(op: op, operand: name, reason: "byte offset \(tensor.slice.offset) is not a multiple of \(alignment)")
            }
        }
        if path == .singlePass && input.buffer === output.buffer
            && input.slice.offset < output.slice.offset + output.byteCount
            && output.slice.offset < input.slice.offset + input.byteCount {
            throw VkAttnError.invalidValue(op: op, operand: "output", reason: "overlaps the input; in-place scans need path .reduceThenScan (the single pass may re-read a predecessor's input)")
        }
        guard n < 1 << 31, count < 1 << 40 else {
            throw VkAttnError.tooLarge(op: op, operand: "input", bytes: input.byteCount, limit: (1 << 31) * 4)
        }

        // Chunks: whole tiles, each within one binding (and 32-bit indices).
        let tile = tuning.tileElements
        let range = min(device.capabilities.maxStorageBufferRange, 1 << 32 - 64) / 4
        let chunkElements = range / tile * tile
        guard chunkElements > 0 else {
            throw VkAttnError.unsupported(op: op, reason: "maxStorageBufferRange \(device.capabilities.maxStorageBufferRange) is below one tile")
        }
        self.chunkElements = chunkElements
        var chunks: [(start: Int, count: Int, tileBase: Int, tiles: Int)] = []
        var tileBase = 0
        for start in stride(from: 0, to: count, by: chunkElements) {
            let c = min(chunkElements, count - start)
            let tiles = (c + tile - 1) / tile
            chunks.append((start, c, tileBase, tiles))
            tileBase += tiles
        }
        self.chunks = chunks
        self.totalTiles = tileBase
        guard totalTiles < 1 << 30 else {
            throw VkAttnError.tooLarge(op: op, operand: "input", bytes: input.byteCount, limit: (1 << 30) * tile * 4)
        }
    }

    var segmentBits: Int { (rowLength != nil ? 1 : 0) | (flags != nil || offsets != nil ? 2 : 0) }

    func tileShader() -> ShaderSource {
        let variants: [ShaderSource]
        switch (scan.op, input.dtype) {
        case (.add, .i32): variants = [Shaders.scanTilesAddI32, Shaders.scanTilesAddI32Qf, Shaders.scanTilesAddI32W64, Shaders.scanTilesAddI32W64Qf]
        case (.add, .u32): variants = [Shaders.scanTilesAddU32, Shaders.scanTilesAddU32Qf, Shaders.scanTilesAddU32W64, Shaders.scanTilesAddU32W64Qf]
        case (.max, _): variants = [Shaders.scanTilesMaxF32, Shaders.scanTilesMaxF32Qf, Shaders.scanTilesMaxF32W64, Shaders.scanTilesMaxF32W64Qf]
        case (.add, _): variants = [Shaders.scanTilesAddF32, Shaders.scanTilesAddF32Qf, Shaders.scanTilesAddF32W64, Shaders.scanTilesAddF32W64Qf]
        }
        // With the Vulkan memory model on, atomics use QueueFamily scope (Device scope would
        // also need vulkanMemoryModelDeviceScope, which the device layer does not enable).
        return variants[(tuning.wideLoads ? 2 : 0) + (device.enabled.vulkanMemoryModel ? 1 : 0)]
    }

    func spineShader() -> ShaderSource {
        switch (scan.op, input.dtype) {
        case (.add, .i32): return Shaders.scanSpineAddI32
        case (.add, .u32): return Shaders.scanSpineAddU32
        case (.max, _): return Shaders.scanSpineMaxF32
        case (.add, _): return Shaders.scanSpineAddF32
        }
    }

    func tileKernel(pass: Int, tail: Bool) throws -> Kernel {
        let caps = device.capabilities
        let minSubgroup = max(1, caps.minSubgroupSize)
        let rounds = (tuning.workgroupSize / minSubgroup + minSubgroup - 1) / minSubgroup
        return try device.kernel(KernelDescriptor(
            shader: tileShader(), bindings: 7,
            specialization: ["local_size_x": .int(tuning.workgroupSize), "ITEMS": .int(tuning.itemsPerInvocation),
                             "SEG": .int(segmentBits), "EXCLUSIVE": .bool(scan.exclusive), "PASS": .int(pass),
                             "SPIN": .int(tuning.lookbackPolls), "FORCE_FALLBACK": .int(tuning.forcedFallbacks),
                             "MAX_SUBGROUP": .int(max(1, caps.maxSubgroupSize)), "ROUNDS": .int(max(1, rounds)), "TAIL": .bool(tail)]))
    }

    /// Workgroups and tiles per workgroup for `tiles` tiles: enough workgroups that each takes
    /// at most `tilesPerWorkgroup` (more when the grid's axis would overflow).
    func grid(_ tiles: Int) -> (groups: (x: Int, y: Int, z: Int), perGroup: Int) {
        let maxX = device.capabilities.maxWorkgroupCount[0]
        let perGroup = max(tuning.tilesPerWorkgroup, (tiles + maxX - 1) / maxX)
        return (((tiles + perGroup - 1) / perGroup, 1, 1), perGroup)
    }

    func encode(on stream: Stream) throws -> ScanDispatch {
        let op = Self.op
        let elementBytes = input.dtype.byteSize
        // Status words: [0] fallbacks, [1 + 2 chunk + pass] tickets, then two per tile (descriptors).
        let descBase = 1 + 2 * chunks.count
        let status = try device.makeBuffer(byteCount: 4 * (descBase + 2 * totalTiles))
        let spine = path == .reduceThenScan ? try device.makeBuffer(byteCount: 8 * totalTiles) : status
        // Kernels first: a pipeline that fails to build throws before anything is recorded.
        // Per pass: the kernel for every tile but each chunk's last, and the last tile's.
        let passes = path == .singlePass ? [0] : [1, 2]
        let kernels = try passes.map { (main: try tileKernel(pass: $0, tail: false), tail: try tileKernel(pass: $0, tail: true)) }
        let spineKernel = path == .reduceThenScan
            ? try device.kernel(KernelDescriptor(
                shader: spineShader(), bindings: 1,
                specialization: ["local_size_x": .int(tuning.workgroupSize), "ITEMS": .int(16), "SEG": .int(segmentBits),
                                 "MAX_SUBGROUP": .int(max(1, device.capabilities.maxSubgroupSize))]))
            : nil
        let flagsKernel = offsets != nil
            ? try device.kernel(KernelDescriptor(shader: Shaders.scanOffsetFlags, bindings: 2,
                                                 specialization: ["local_size_x": .int(256)]))
            : nil
        var flagSource = flags?.slice
        var flagsBuffer: Buffer?
        if offsets != nil {
            let b = try device.makeBuffer(byteCount: 4 * count)
            flagsBuffer = b
            flagSource = b.whole
        }

        try stream.fill(status.whole, word: 0)
        if let offsets, let flagsKernel, let flagsBuffer {
            try stream.fill(flagsBuffer.whole, word: 0)
            try stream.barrier()
            for chunk in chunks {
                let push = ScanOffsetFlagsPush(count: try UInt32(pushing: offsets.elementCount, "\(op) offsets"),
                                               n: try UInt32(pushing: chunk.count, "\(op) chunk elements"),
                                               base: try UInt32(pushing: chunk.start, "\(op) chunk start"))
                let groups = Launch.gridStrideGroups(items: offsets.elementCount, workgroupSize: 256, device: device)
                let slice = try flagsBuffer.slice(offset: chunk.start * 4, byteCount: chunk.count * 4)
                try stream.dispatch(flagsKernel, bindings: [offsets.slice, slice], push: push, groups: (groups, 1, 1))
            }
        }
        try stream.barrier()

        func bindings(_ chunk: (start: Int, count: Int, tileBase: Int, tiles: Int)) throws -> [BufferSlice] {
            let inSlice = try input.buffer.slice(offset: input.slice.offset + chunk.start * elementBytes, byteCount: chunk.count * elementBytes)
            let last = chunk.start + chunk.count == count
            let outCount = chunk.count + (last && writesTotal ? 1 : 0)
            let outSlice = try output.buffer.slice(offset: output.slice.offset + chunk.start * elementBytes, byteCount: outCount * elementBytes)
            let flagSlice = try flagSource.map {
                try $0.buffer.slice(offset: $0.offset + chunk.start * 4, byteCount: chunk.count * 4)
            } ?? inSlice
            return [inSlice, inSlice, outSlice, outSlice, flagSlice, status.whole, spine.whole]
        }
        func push(_ index: Int, _ chunk: (start: Int, count: Int, tileBase: Int, tiles: Int), counter: Int = 0, tiles: Int) throws -> ScanTilesPush {
            let last = chunk.start + chunk.count == count
            return ScanTilesPush(
                n: try UInt32(pushing: chunk.count, "\(op) chunk elements"), tileBase: try UInt32(pushing: chunk.tileBase, "\(op) tile base"),
                tiles: try UInt32(pushing: tiles, "\(op) tiles"), rowLen: try UInt32(pushing: rowLength ?? 1, "\(op) row length"),
                rowPhase: try UInt32(pushing: rowLength.map { chunk.start % $0 } ?? 0, "\(op) row phase"),
                counterIndex: try UInt32(pushing: 1 + 2 * index + counter, "\(op) counter"), statsIndex: 0,
                descBase: try UInt32(pushing: descBase, "\(op) descriptors"), writeTotal: last && writesTotal ? 1 : 0,
                tilesPerGroup: try UInt32(pushing: grid(max(1, tiles)).perGroup, "\(op) tiles per workgroup"))
        }

        // One pass over every chunk: the tiles but the last (many workgroups), a barrier (the last
        // tile then finds its predecessors complete), the last tile (one workgroup).
        func runPass(_ k: Int) throws {
            for (i, chunk) in chunks.enumerated() {
                if chunk.tiles > 1 {
                    try stream.dispatch(kernels[k].main, bindings: bindings(chunk), push: push(i, chunk, counter: k, tiles: chunk.tiles - 1),
                                        groups: grid(chunk.tiles - 1).groups)
                    try stream.barrier()
                }
                try stream.dispatch(kernels[k].tail, bindings: bindings(chunk), push: push(i, chunk, counter: k, tiles: chunk.tiles),
                                    groups: (1, 1, 1))
                if i + 1 < chunks.count { try stream.barrier() }
            }
        }
        if path == .singlePass {
            try runPass(0)
        } else {
            try runPass(0)
            try stream.barrier()
            if let spineKernel {
                try stream.dispatch(spineKernel, bindings: [spine.whole], push: ScanSpinePush(tiles: try UInt32(pushing: totalTiles, "\(op) tiles")),
                                    groups: (1, 1, 1))
            }
            try stream.barrier()
            try runPass(1)
        }
        return ScanDispatch(algorithm: path, tiles: totalTiles, chunks: chunks.count, status: status, statsWord: 0)
    }
}

/// Shaders/scan/tiles.comp.
struct ScanTilesPush: PushConstantBlock {
    var n: UInt32
    var tileBase: UInt32
    var tiles: UInt32
    var rowLen: UInt32
    var rowPhase: UInt32
    var counterIndex: UInt32
    var statsIndex: UInt32
    var descBase: UInt32
    var writeTotal: UInt32
    var tilesPerGroup: UInt32
}

/// Shaders/scan/spine.comp.
struct ScanSpinePush: PushConstantBlock {
    var tiles: UInt32
}

/// Shaders/scan/offset_flags.comp.
struct ScanOffsetFlagsPush: PushConstantBlock {
    var count: UInt32
    var n: UInt32
    var base: UInt32
}
