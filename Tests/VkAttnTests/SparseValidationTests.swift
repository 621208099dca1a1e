import Testing
import VkAttn
import TestSupport

@Suite("Sparse validation: every malformed structure is a typed error naming the first bad row")
struct SparseValidationTests {
    /// A way to break `SparseFixtures.small()` (8 x 6, nnz 11, offsets [0 2 2 5 6 6 8 9 11])
    /// and the row that must be reported.
    struct Breakage: CustomTestStringConvertible, Sendable {
        var name: String
        var row: Int
        var reasonContains: String
        var nnz: Int? = nil
        var edit: @Sendable (inout CSRArrays) -> Void
        var testDescription: String { name }
    }

    static let breakages: [Breakage] = [
        Breakage(name: "offsets start at 1", row: 0, reasonContains: "start at 1, expected 0") { $0.rowOffsets[0] = 1 },
        Breakage(name: "offsets decrease", row: 3, reasonContains: "decrease: offsets[4] = 4 < offsets[3] = 5") { $0.rowOffsets[4] = 4 },
        Breakage(name: "negative offset", row: 1, reasonContains: "decrease") { $0.rowOffsets[2] = -3 },
        Breakage(name: "offset past nnz", row: 5, reasonContains: "past nnz = 11") { $0.rowOffsets[6] = 20 },
        Breakage(name: "offsets end before nnz", row: 7, reasonContains: "end at 11, expected nnz = 12", nnz: 12) { _ in },
        Breakage(name: "negative column", row: 2, reasonContains: "column index -1 at position 3") { $0.columnIndices[3] = -1 },
        Breakage(name: "column past cols", row: 6, reasonContains: "column index 6 at position 8 is outside 0..<6") { $0.columnIndices[8] = 6 },
        Breakage(name: "huge column", row: 7, reasonContains: "outside") { $0.columnIndices[10] = Int32.max },
        Breakage(name: "column error before offset error", row: 2, reasonContains: "column index 9") {
            $0.columnIndices[4] = 9
            $0.rowOffsets[6] = 20
        },
        Breakage(name: "offset error before column error", row: 3, reasonContains: "decrease") {
            $0.columnIndices[8] = -7
            $0.rowOffsets[4] = 4
        },
    ]

    func broken(_ b: Breakage) -> CSRArrays {
        var a = SparseFixtures.small()
        b.edit(&a)
        return a
    }

    @Test(arguments: breakages, [SparseValidation.Mode.host, .device])
    func spmmRejectsBeforeDispatch(b: Breakage, mode: SparseValidation.Mode) throws {
        let a = broken(b)
        let nnz = b.nnz ?? a.nnz
        try withDevice { device in
            let matrix = try uploadUnchecked(device, a, nnz: nnz)
            for kernel in SpMMKernel.allCases {
                do {
                    _ = try SpMMPlan(matrix, n: 4, options: SpMMOptions(kernel: kernel, validation: mode))
                    Issue.record("\(b.name): no error (\(mode))")
                } catch let VkAttnError.malformedSparse(op, row, reason) {
                    #expect(op == "sparse.spmm" && row == b.row, "\(b.name) \(mode): row \(row), \(reason)")
                    #expect(reason.contains(b.reasonContains), "\(b.name) \(mode): \(reason)")
                }
            }
            do {
                _ = try SDDMMPlan(matrix, k: 3, options: SDDMMOptions(validation: mode))
                Issue.record("\(b.name): SDDMM accepted it (\(mode))")
            } catch let VkAttnError.malformedSparse(op, row, _) {
                #expect(op == "sparse.sddmm" && row == b.row, "\(b.name) \(mode)")
            }
        }
    }

    @Test(arguments: breakages)
    func hostAndDeviceReportTheSameError(b: Breakage) throws {
        let a = broken(b)
        let nnz = b.nnz ?? a.nnz
        var hostError: VkAttnError? = nil
        do {
            try SparseValidation.check(op: "sparse.spmm", rows: a.rows, cols: a.cols, nnz: nnz, rowOffsets: a.rowOffsets,
                                       columnIndices: a.columnIndices + [0])
        } catch let error as VkAttnError {
            hostError = error
        }
        #expect(hostError != nil)
        try withDevice { device in
            let matrix = try uploadUnchecked(device, a, nnz: nnz)
            #expect(throws: hostError.map { $0 } ?? VkAttnError.unsupported(op: "", reason: "")) {
                _ = try SpMMPlan(matrix, n: 2, options: SpMMOptions(validation: .device))
            }
        }
    }

    @Test(arguments: breakages)
    func uploadFromHostArraysRejects(b: Breakage) throws {
        var a = broken(b)
        if b.nnz != nil {  // one more nonzero stored than the offsets cover
            a.columnIndices += [0]
            a.values += [0]
        }
        try withDevice { device in
            do {
                _ = try device.makeCSR(a)
                Issue.record("\(b.name): makeCSR accepted it")
            } catch let VkAttnError.malformedSparse(op, row, _) {
                #expect(op == "sparse.makeCSR" && row == b.row, "\(b.name)")
            }
        }
    }

    @Test(arguments: [SparseValidation.Mode.host, .device])
    func blockStructureIsChecked(mode: SparseValidation.Mode) throws {
        try withDevice { device in
            let bs = 16
            let offsets = try device.makeTensor(shape: [4], dtype: .i32)
            let columns = try device.makeTensor(shape: [3], dtype: .i32)
            let values = try device.makeTensor(shape: [3, bs, bs], dtype: .f32)
            try offsets.buffer.write([Int32(0), 1, 3, 3])
            try columns.buffer.write([Int32(0), 1, 2])  // 2 is past the 2 block columns, in block row 1
            let matrix = try BSRMatrix(blockSize: bs, blockRows: 3, blockCols: 2, blockCount: 3, blockRowOffsets: offsets,
                                       blockColumnIndices: columns, values: values)
            #expect(throws: VkAttnError.malformedSparse(op: "sparse.bsrSpmm", row: 1,
                                                         reason: "block column index 2 at position 2 is outside 0..<2")) {
                _ = try BSRSpMMPlan(matrix, n: 8, options: BSRSpMMOptions(validation: mode))
            }
            try offsets.buffer.write([Int32(0), 2, 1, 3])
            try columns.buffer.write([Int32(0), 1, 1])
            #expect(throws: VkAttnError.malformedSparse(op: "sparse.bsrSpmm", row: 1,
                                                         reason: "block row offsets decrease: offsets[2] = 1 < offsets[1] = 2")) {
                _ = try BSRSpMMPlan(matrix, n: 8, options: BSRSpMMOptions(validation: mode))
            }
        }
    }

    @Test func largeMatricesValidateOnTheDevice() throws {
        let seed = testSeed()
        var a = SparseGenerator.csr(.uniform, rows: 40_000, cols: 3000, density: 0.01, emptyRowFraction: 0.05, seed: seed)
        #expect(a.rows + a.nnz >= SparseValidation.deviceThreshold)
        let bad = 31_337
        let position = Int(a.rowOffsets[bad + 1]) - 1
        if position >= Int(a.rowOffsets[bad]) { a.columnIndices[position] = 3000 }
        try withDevice { device in
            let matrix = try uploadUnchecked(device, a)
            do {
                _ = try SpMMPlan(matrix, n: 4)
                #expect(position < Int(a.rowOffsets[bad]), "seed \(seed): accepted a bad column")
            } catch let VkAttnError.malformedSparse(_, row, reason) {
                #expect(row == bad && reason.contains("column index 3000"), "seed \(seed): row \(row) \(reason)")
            }
        }
    }

    @Test func shapesMustAgree() throws {
        try withDevice { device in
            let offsets = try device.makeTensor(shape: [9], dtype: .i32)
            let columns = try device.makeTensor(shape: [11], dtype: .i32)
            let values = try device.makeTensor(shape: [11], dtype: .f32)
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.csrMatrix", operand: "row offsets", expected: "[8]", actual: "[9]")) {
                _ = try CSRMatrix(rows: 7, cols: 6, nnz: 11, rowOffsets: offsets, columnIndices: columns, values: values)
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: "sparse.csrMatrix", operand: "row offsets", expected: "i32", actual: "f32")) {
                _ = try CSRMatrix(rows: 10, cols: 6, nnz: 11, rowOffsets: values, columnIndices: columns, values: values)
            }
            #expect(throws: VkAttnError.invalidValue(op: "sparse.csrMatrix", operand: "cols", reason: "-1 is negative")) {
                _ = try CSRMatrix(rows: 8, cols: -1, nnz: 11, rowOffsets: offsets, columnIndices: columns, values: values)
            }
            // No columns is legal, but then no nonzeros.
            #expect(throws: VkAttnError.invalidValue(op: "sparse.csrMatrix", operand: "nnz", reason: "8 x 0 has no entries for 11 nonzeros")) {
                _ = try CSRMatrix(rows: 8, cols: 0, nnz: 11, rowOffsets: offsets, columnIndices: columns, values: values)
            }
            #expect(throws: VkAttnError.shapeMismatch(op: "sparse.makeCSR", operand: "values", expected: "[11]", actual: "[10]")) {
                var a = SparseFixtures.small()
                a.values.removeLast()
                _ = try device.makeCSR(a)
            }
            #expect(throws: VkAttnError.invalidValue(op: "sparse.bsrMatrix", operand: "block size", reason: "8 is not one of [16, 32]")) {
                _ = try BSRMatrix(blockSize: 8, blockRows: 1, blockCols: 1, blockCount: 1, blockRowOffsets: offsets,
                                  blockColumnIndices: columns, values: values)
            }
        }
    }

    /// Structure changed after the plan validated it: the kernels clamp every index, so they
    /// stay inside their buffers (C's guards survive, no validation message, no crash).
    @Test(arguments: SpMMKernel.allCases)
    func kernelsStayInBoundsOnGarbage(kernel: SpMMKernel) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let a = SparseGenerator.csr(.powerLaw, rows: 200, cols: 150, density: 0.05, seed: seed)
        try withDevice { device in
            let matrix = try device.makeCSR(a)
            let plan = try SpMMPlan(matrix, n: 12, options: SpMMOptions(kernel: kernel))
            let sddmm = try SDDMMPlan(matrix, k: 5, options: SDDMMOptions(scaleByValues: true))
            let garbageOffsets = (0...a.rows).map { _ in Int32.random(in: -1000...Int32.max, using: &rng) }
            let garbageColumns = (0..<a.nnz).map { _ in Int32.random(in: Int32.min...Int32.max, using: &rng) }
            try matrix.rowOffsets.buffer.write(garbageOffsets, at: matrix.rowOffsets.slice.offset)
            try matrix.columnIndices.buffer.write(garbageColumns, at: matrix.columnIndices.slice.offset)

            let b = try device.makeTensor(rng.floats(a.cols * 12), shape: [a.cols, 12])
            let c = try GuardedTensor(device, shape: [a.rows, 12], values: rng.floats(a.rows * 12), guardValue: -7)
            let x = try device.makeTensor(rng.floats(a.rows * 5), shape: [a.rows, 5])
            let y = try device.makeTensor(rng.floats(a.cols * 5), shape: [a.cols, 5])
            let out = try GuardedTensor(device, shape: [a.nnz], values: nil, guardValue: -9)
            let stream = try device.makeStream()
            try plan.encode(b: b, c: c.tensor, alpha: 1, beta: 1, on: stream)
            try sddmm.encode(x: x, y: y, out: out.tensor, on: stream)
            try stream.synchronize()
            #expect(try c.guardsIntact(), "seed \(seed)")
            #expect(try out.guardsIntact(), "seed \(seed)")
        }
    }
}
