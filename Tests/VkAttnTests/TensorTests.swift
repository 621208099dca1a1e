import Testing
import VkAttn
import TestSupport

@Suite("Tensors: views, dtypes, checks")
struct TensorTests {
    @Test(arguments: DType.allCases)
    func roundTripsThroughEveryDType(dtype: DType) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let values = rng.floats(3 * 5 * 7, in: -50...50).map { $0.rounded() }
            let expected = dtype == .u32 ? values.map { abs($0) } : values
            let t = try device.makeTensor(expected, shape: [3, 5, 7], dtype: dtype)
            #expect(t.byteCount == 105 * dtype.byteSize)
            let got = try t.readFloats()
            #expect(got == expected, "seed \(seed) \(zip(got, expected).filter { $0.0 != $0.1 }.prefix(3))")
        }
    }

    /// Integer tensors take whole numbers in range; anything else is a typed error naming the
    /// element (it used to trap converting NaN or 2^40 to an integer).
    @Test func integerTensorsRefuseWhatTheyCannotHold() throws {
        try withDevice { device in
            for dtype in [DType.i32, .u32] {
                let t = try device.makeTensor(shape: [4], dtype: dtype)
                try t.write(floats: [0, 1, 2, 3])
                #expect(try t.readFloats() == [0, 1, 2, 3])
                for bad: Float in [.nan, .infinity, 1e12, 0.5, dtype == .u32 ? -1 : -3e9] {
                    #expect(throws: VkAttnError.self, "\(dtype) \(bad)") { try t.write(floats: [0, bad, 2, 3]) }
                }
                #expect(dtype.rounded(.nan).isNaN)
                #expect(dtype.rounded(1e20) <= 4_294_967_296 && dtype.rounded(2.7) == 2)
            }
        }
    }

    @Test func viewsMustFitTheirBuffer() throws {
        try withDevice { device in
            let buffer = try device.makeBuffer(byteCount: 256)
            _ = try Tensor(buffer, shape: [8, 8], dtype: .f32)
            #expect(throws: VulkanError.self) { _ = try Tensor(buffer, shape: [8, 9], dtype: .f32) }
            #expect(throws: VulkanError.self) { _ = try Tensor(buffer, shape: [4], dtype: .f32, byteOffset: 248) }
            #expect(throws: VkAttnError.self) { _ = try Tensor(buffer, shape: [2, -1], dtype: .f32) }
            #expect(try Tensor(buffer, shape: [0, 4], dtype: .f32).isEmpty)  // empty tensors are legal
            #expect(throws: VkAttnError.self) { _ = try Tensor(buffer, shape: [Int.max, 4], dtype: .f32) }
        }
    }

    @Test func expectNamesTheOpAndOperand() throws {
        try withDevice { device in
            let t = try device.makeTensor(shape: [2, 3], dtype: .f16)
            do {
                try t.expect(op: "attention", "Q", shape: [2, 4])
                Issue.record("shape mismatch not detected")
            } catch let error as VkAttnError {
                #expect(error == .shapeMismatch(op: "attention", operand: "Q", expected: "[2, 4]", actual: "[2, 3]"))
                #expect(error.description.contains("attention") && error.description.contains("Q"))
            }
            #expect(throws: VkAttnError.dtypeMismatch(op: "attention", operand: "K", expected: "f32", actual: "f16")) {
                try t.expect(op: "attention", "K", shape: [2, 3], dtype: .f32)
            }
        }
    }
}
