import Testing
import VkAttn
import TestSupport

/// lavapipe caps an invocation's loop iterations (65535 in total, silently): SpMM plans must
/// keep every team's walk below it, switching kernels when the statistics chose, else refusing.
@Suite("SpMM on devices that cap loop iterations")
struct SparseLoopBudgetTests {
    @Test func longRowsWithManyColumnsStayExact() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let cols = 8000, n = 2048
        let a = CSRArrays(rows: 2, cols: cols, rowOffsets: [0, Int32(cols), Int32(2 * cols)],
                          columnIndices: (0..<cols).map(Int32.init) + (0..<cols).map(Int32.init), values: rng.floats(2 * cols))
        try withDevice { device in
            let matrix = try device.makeCSR(a)
            let plan = try SpMMPlan(matrix, n: n, options: SpMMOptions(kernel: nil))
            let b = rng.floats(cols * n)
            let bt = try device.makeTensor(b, shape: [cols, n])
            let c = try device.makeTensor(shape: [2, n], dtype: .f32)
            let stream = try device.makeStream()
            try plan.encode(b: bt, c: c, on: stream)
            try stream.synchronize()
            let error = SparseReference.spmm(a, b: b, n: n).maxError(of: try c.readFloats())
            #expect(error <= 1e-5, "\(plan.path) error \(error) seed \(seed)")
            if let limit = device.capabilities.loopIterationLimit {
                #expect(plan.kernel == .mergePath, "row-split would walk 8000 nonzeros x 16 passes")
                #expect(throws: VkAttnError.self) {
                    let forced = try SpMMPlan(matrix, n: n, options: SpMMOptions(kernel: .rowSplit))
                    Issue.record("row-split accepted with an estimate of \(forced.loopIterationEstimate) > \(limit)")
                }
            }
        }
    }
}
