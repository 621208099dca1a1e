/// Validation of a compressed-row structure that lives on a device, on the host (read back)
/// or on the device (two kernels: row offsets with row statistics, then column indices; the
/// first bad row by atomicMin). Both report what `SparseValidation.check` reports.
enum SparseDeviceValidation {
    struct Structure {
        var op: String
        var rows: Int
        var cols: Int
        var nnz: Int
        var rowOffsets: Tensor
        var columnIndices: Tensor
        var unit: SparseValidation.Unit
    }

    /// Validates per `mode`; returns the statistics and where the check ran.
    static func validate(_ s: Structure, mode: SparseValidation.Mode) throws -> (RowStatistics, SparseValidation.Site) {
        let caps = s.rowOffsets.device.capabilities
        let kernelsRun = caps.subgroupInCompute && caps.subgroupOperations.contains("arithmetic")
        let onDevice: Bool
        switch mode {
        case .auto: onDevice = kernelsRun && s.rows + s.nnz >= SparseValidation.deviceThreshold
        case .host: onDevice = false
        case .device:
            guard kernelsRun else {
                throw VkAttnError.unsupported(op: s.op, reason: "device validation needs subgroup arithmetic in compute shaders, which \(s.rowOffsets.device.label) does not offer")
            }
            onDevice = true
        }
        if onDevice { return (try onTheDevice(s), .device) }
        let offsets = try read(s.rowOffsets, first: 0, count: s.rows + 1)
        let columns = s.nnz == 0 ? [] : try read(s.columnIndices, first: 0, count: s.nnz)
        let stats = try SparseValidation.check(op: s.op, rows: s.rows, cols: s.cols, nnz: s.nnz, rowOffsets: offsets,
                                               columnIndices: columns, unit: s.unit)
        return (stats, .host)
    }

    static func onTheDevice(_ s: Structure) throws -> RowStatistics {
        let device = s.rowOffsets.device
        let wg = Launch.workgroupSize(256, device: device)
        let rowGroups = Launch.gridStrideGroups(items: s.rows, workgroupSize: wg, device: device)
        let slotsPerGroup = max(1, wg / max(1, device.capabilities.minSubgroupSize))
        let partials = try device.makeBuffer(byteCount: rowGroups * slotsPerGroup * 16)
        let result = try device.makeBuffer(byteCount: 8)
        // With the Vulkan memory model on, atomics use QueueFamily scope (Device scope would
        // also need vulkanMemoryModelDeviceScope).
        let memoryModel = device.enabled.vulkanMemoryModel
        let rowsKernel = try device.kernel(KernelDescriptor(
            shader: memoryModel ? Shaders.sparseValidateRowsQueueFamily : Shaders.sparseValidateRowsDevice,
            bindings: 3, specialization: ["local_size_x": .int(wg)]))
        let columnsKernel = try device.kernel(KernelDescriptor(
            shader: memoryModel ? Shaders.sparseValidateColumnsQueueFamily : Shaders.sparseValidateColumnsDevice,
            bindings: 3, specialization: ["local_size_x": .int(wg)]))

        let stream = try device.makeStream()
        try stream.fill(result.whole, word: .max)
        try stream.fill(partials.whole, word: 0)
        try stream.barrier()
        let (rows, cols, nnz) = (try UInt32(pushing: s.rows, "rows"), try UInt32(pushing: s.cols, "cols"), try UInt32(pushing: s.nnz, "nnz"))
        try stream.dispatch(rowsKernel, bindings: [s.rowOffsets.slice, result.whole, partials.whole],
                            push: ValidateRowsPush(rows: rows, nnz: nnz, mean: Float(Double(s.nnz) / Double(s.rows))),
                            groups: (rowGroups, 1, 1))
        try stream.barrier()
        let nnzGroups = Launch.gridStrideGroups(items: max(s.nnz, 1), workgroupSize: wg, device: device)
        try stream.dispatch(columnsKernel, bindings: [s.rowOffsets.slice, s.columnIndices.slice, result.whole],
                            push: ValidateColumnsPush(rows: rows, cols: cols, nnz: nnz),
                            groups: (nnzGroups, 1, 1))
        try stream.synchronize()

        let bad = try result.read(UInt32.self, count: 2).map { min(Int($0), s.rows) }
        if bad[0] < s.rows || bad[1] < s.rows {
            throw try explain(s, offsetRow: bad[0], columnRow: bad[1])
        }
        let words = try partials.read(UInt32.self, count: rowGroups * slotsPerGroup * 4)
        var longest = 0, empty = 0
        var squares = 0.0
        for slot in 0..<(rowGroups * slotsPerGroup) where words[slot * 4 + 3] != 0 {
            longest = max(longest, Int(words[slot * 4]))
            empty += Int(words[slot * 4 + 1])
            squares += Double(Float(bitPattern: words[slot * 4 + 2]))
        }
        let mean = Double(s.nnz) / Double(s.rows)
        return RowStatistics(rows: s.rows, nnz: s.nnz, maxLength: longest, emptyRows: empty,
                             coefficientOfVariation: RowStatistics.cv(sumSquaredDeviations: squares, rows: s.rows, mean: mean))
    }

    /// The error for the first bad row the kernels found, with the reason read from the
    /// offending values (a few reads, not the whole structure).
    static func explain(_ s: Structure, offsetRow: Int, columnRow: Int) throws -> VkAttnError {
        if columnRow < offsetRow {
            let bounds = try read(s.rowOffsets, first: columnRow, count: 2)
            let start = Int(bounds[0]), end = Int(bounds[1])
            if start >= 0, end > start, end <= s.nnz {
                let columns = try read(s.columnIndices, first: start, count: end - start)
                if let reason = SparseValidation.columnProblem(columns: columns[...], firstPosition: start, cols: s.cols, unit: s.unit) {
                    return .malformedSparse(op: s.op, row: columnRow, reason: reason)
                }
            }
            return .malformedSparse(op: s.op, row: columnRow, reason: "a column index is outside 0..<\(s.cols)")
        }
        let bounds = try read(s.rowOffsets, first: offsetRow, count: 2)
        let reason = SparseValidation.offsetProblem(row: offsetRow, rows: s.rows, nnz: s.nnz, start: bounds[0], end: bounds[1], unit: s.unit)
        return .malformedSparse(op: s.op, row: offsetRow, reason: reason ?? "malformed row offsets")
    }

    static func read(_ tensor: Tensor, first: Int, count: Int) throws -> [Int32] {
        try tensor.buffer.read(Int32.self, count: count, at: tensor.slice.offset + first * 4)
    }
}

/// Shaders/sparse/validate_rows.comp.
struct ValidateRowsPush: PushConstantBlock {
    var rows: UInt32, nnz: UInt32
    var mean: Float
}

/// Shaders/sparse/validate_columns.comp.
struct ValidateColumnsPush: PushConstantBlock {
    var rows: UInt32, cols: UInt32, nnz: UInt32
}
