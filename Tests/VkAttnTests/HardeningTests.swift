import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Absurd integers at the public API are typed errors (or well-defined results), never traps.
@Suite("Absurd sizes are typed errors")
struct HardeningTests {
    @Test func sparsePlansRefuseOverflowingWidths() throws {
        try withDevice { device in
            let a = SparseGenerator.csr(.uniform, rows: 8, cols: 8, density: 0.5, emptyRowFraction: 0, seed: 1)
            let m = try device.makeCSR(a)
            for n in [Int.max / 4, Int.max / 2, Int.max] {
                #expect(throws: VkAttnError.self) { _ = try SpMMPlan(m, n: n) }
                #expect(throws: VkAttnError.self) { _ = try SDDMMPlan(m, k: n) }
            }
            let b = try device.makeBSR(BSRArrays(csr: a, blockSize: 16))
            #expect(throws: VkAttnError.self) { _ = try BSRSpMMPlan(b, n: Int.max / 2) }
        }
    }

    @Test func scanRefusesAnOverflowingCount() throws {
        try withDevice { device in
            let x = try device.makeTensor(shape: [16], dtype: .f32)
            let stream = try device.makeStream()
            for count in [Int.max / 2, Int.max] {
                #expect(throws: VkAttnError.self) {
                    _ = try PrefixScan().encode(input: x.slice, output: x.slice, count: count, dtype: .f32, on: stream)
                }
            }
            try stream.synchronize()
        }
    }

    @Test func chunkCountOfAnInvalidChunkLengthIsDefined() throws {
        try withDevice { device in
            #expect(GatedLinearAttention(gating: .none, chunkLength: 0).chunkCount(length: 10, on: device) == 10)
            #expect(GatedLinearAttention(gating: .none, chunkLength: -3).chunkCount(length: 7, on: device) == 7)
            #expect(GatedLinearAttention(gating: .none, chunkLength: 4).chunkCount(length: Int.max, on: device) == Int.max / 4 + 1)
        }
    }

    @Test func shardPlansRefuseWhatPackedLayoutsCannotHold() {
        #expect(throws: VkAttnError.self) { try ShardPlan(lengths: [Int.max, 1], ranks: 2, sharding: .contiguous) }
        #expect(throws: VkAttnError.self) { try ShardPlan(lengths: [3_000_000_000], ranks: 2, sharding: .contiguous) }
        #expect(throws: VkAttnError.self) { try ShardPlan(lengths: [10], ranks: Int.max, sharding: .zigzag) }
        #expect(throws: VkAttnError.self) { try ShardPlan(lengths: [Int.max / 2, Int.max / 2, 4], ranks: 2, sharding: .striped) }
    }
}
