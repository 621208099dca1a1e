import Testing
@testable import VulkanCompute
import VkAttn
import TestSupport

@Suite("Streams: submission, timelines, timestamps, concurrency")
struct StreamTests {
    @Test func timestampsAreMonotonicAndConvertToNanoseconds() throws {
        try withDevice { device in
            let n = 1 << 16
            let x = try device.makeBuffer([Float](repeating: 1, count: n))
            let y = try device.makeBuffer(of: Float.self, count: n)
            let kernel = try device.kernel(affineDescriptor(scale: 1, step: 0))
            let stream = try device.makeStream()
            var stamps = [try stream.timestamp()]
            for _ in 0..<4 {
                try stream.dispatch(kernel, bindings: [x.whole, y.whole], push: AffinePush(n: UInt32(n), bias: Float(0)), groups: (n / 64, 1, 1))
                try stream.barrier()
                stamps.append(try stream.timestamp())
            }
            #expect(throws: VulkanError.self) { _ = try stream.nanoseconds(from: stamps[0], to: stamps[1]) }
            try stream.synchronize()
            var previous = 0.0
            for i in 1..<stamps.count {
                let ns = try stream.nanoseconds(from: stamps[0], to: stamps[i])
                #expect(ns >= previous)
                previous = ns
            }
            #expect(previous > 0)
            // The next batch invalidates the old timestamps.
            _ = try stream.timestamp()
            try stream.synchronize()
            #expect(throws: VulkanError.self) { _ = try stream.nanoseconds(from: stamps[0], to: stamps[1]) }
        }
    }

    @Test func manyDispatchesInOneBatchGrowTheDescriptorPools() throws {
        let seed = testSeed()
        var rng = SeededRandomForTests(seed: seed)
        try withDevice { device in
            let n = 333
            let x0 = rng.floats(n)
            let a = try device.makeBuffer(x0)
            let b = try device.makeBuffer(of: Float.self, count: n)
            let kernel = try device.kernel(affineDescriptor(scale: 1, step: 0))
            let stream = try device.makeStream()
            for round in 0..<3 {
                for i in 0..<200 {  // alternate a -> b, b -> a, each adding 1
                    let (src, dst) = i % 2 == 0 ? (a, b) : (b, a)
                    try stream.dispatch(kernel, bindings: [src.whole, dst.whole], push: AffinePush(n: UInt32(n), bias: Float(1)),
                                        groups: ((n + 63) / 64, 1, 1))
                    try stream.barrier()
                }
                try stream.synchronize()
                let result = try a.read(Float.self, count: n)
                let expectedAdd = Float(200 * (round + 1))
                #expect(zip(result, x0).allSatisfy { abs($0 - ($1 + expectedAdd)) < 1e-3 }, "round \(round) seed \(seed)")
            }
        }
    }

    @Test func aStreamWaitsOnAnotherStreamsSubmission() throws {
        let seed = testSeed()
        var rng = SeededRandomForTests(seed: seed)
        try withDevice { device in
            let values = rng.words(4099)
            let src = try device.makeBuffer(values)
            let mid = try device.makeBuffer(of: UInt32.self, count: values.count)
            let dst = try device.makeBuffer(of: UInt32.self, count: values.count)
            let first = try device.makeStream()
            let second = try device.makeStream(queue: .transfer)
            try first.copy(from: src.whole, to: mid.whole)
            let submitted = try first.submit()
            try second.wait(for: submitted)
            try second.copy(from: mid.whole, to: dst.whole)
            let done = try second.submit()
            try done.wait()
            #expect(done.isComplete && submitted.isComplete)
            try first.synchronize()
            try second.synchronize()
            #expect(try dst.read(UInt32.self, count: values.count) == values, "seed \(seed)")
        }
    }

    @Test func fillAndCopyCommandsCheckTheirRanges() throws {
        try withDevice { device in
            let a = try device.makeBuffer(byteCount: 64)
            let b = try device.makeBuffer(byteCount: 32)
            let stream = try device.makeStream()
            #expect(throws: VulkanError.self) { try stream.copy(from: a.whole, to: b.whole) }
            #expect(throws: VulkanError.self) { try stream.fill(a.slice(offset: 2, byteCount: 8), word: 0) }
            try stream.fill(a.whole, word: 0xDEAD_BEEF)
            try stream.synchronize()
            #expect(try a.read(UInt32.self, count: 16).allSatisfy { $0 == 0xDEAD_BEEF })
        }
    }

    @Test func oneDeviceServesManyTasksAtOnce() async throws {
        let seed = testSeed()
        try await withDevice { device in
            try await withThrowingTaskGroup(of: Bool.self) { group in
                for t in 0..<8 {
                    group.addTask {
                        var rng = SeededRandomForTests(seed: seed &+ UInt64(t))
                        let n = 1000 + 37 * t
                        let x = rng.floats(n)
                        let xb = try device.makeBuffer(x)
                        let yb = try device.makeBuffer(of: Float.self, count: n)
                        let kernel = try device.kernel(affineDescriptor(scale: Float(t), step: 1))
                        let stream = try device.makeStream()
                        for _ in 0..<10 {
                            try stream.dispatch(kernel, bindings: [xb.whole, yb.whole], push: AffinePush(n: UInt32(n), bias: Float(0.5)),
                                                groups: ((n + 63) / 64, 1, 1))
                            try stream.synchronize()
                        }
                        let y = try yb.read(Float.self, count: n)
                        return (0..<n).allSatisfy { abs(y[$0] - (x[$0] * Float(t) + 0.5 + Float($0))) <= 1e-3 }
                    }
                }
                for try await ok in group { #expect(ok, "seed \(seed)") }
            }
        }
    }
}
