import Testing
@testable import VulkanCompute
import TestSupport

@Suite("Buffers: round trips and typed errors")
struct BufferTests {
    static let awkwardCounts = [1, 2, 3, 7, 61, 1021, 65_537]

    @Test(arguments: [MemoryLocation.device, .host])
    func roundTripsRandomDataAtAwkwardSizes(location: MemoryLocation) throws {
        let seed = testSeed()
        var rng = SeededRandomForTests(seed: seed)
        try withDevice { device in
            for count in Self.awkwardCounts {
                let bytes = rng.bytes(count)
                let b8 = try device.makeBuffer(bytes, location: location)
                #expect(try b8.read(UInt8.self, count: count) == bytes, "u8 count \(count) seed \(seed)")
                let floats = rng.floats(count)
                let bf = try device.makeBuffer(floats, location: location)
                #expect(try bf.read(Float.self, count: count) == floats, "f32 count \(count) seed \(seed)")
            }
        }
    }

    @Test func writesAndReadsAtOffsets() throws {
        let seed = testSeed()
        var rng = SeededRandomForTests(seed: seed)
        try withDevice { device in
            let base = rng.words(1000)
            let buffer = try device.makeBuffer(base)
            let patch = rng.words(37)
            try buffer.write(patch, at: 4 * 501)
            var expected = base
            expected.replaceSubrange(501..<538, with: patch)
            #expect(try buffer.read(UInt32.self, count: 1000) == expected, "seed \(seed)")
            #expect(try buffer.read(UInt32.self, count: 37, at: 4 * 501) == patch, "seed \(seed)")
            #expect(try buffer.read(UInt32.self, count: 1, at: 4 * 999) == [expected[999]])
        }
    }

    @Test func negativeAndOversizedBuffersAreErrors() throws {
        // Zero-sized buffers are legal (EmptyInputTests); negative and overflowing sizes are not.
        try withDevice { device in
            #expect(throws: VulkanError.self) { _ = try device.makeBuffer(byteCount: -8) }
            #expect(throws: VulkanError.self) { _ = try device.makeBuffer(of: Float.self, count: Int.max / 2) }
        }
    }

    @Test func oversizedBufferIsATypedError() throws {
        try withDevice { device in
            let limit = device.capabilities.maxMemoryAllocationBytes
            do {
                _ = try device.makeBuffer(byteCount: limit + 1)
                Issue.record("allocation beyond maxMemoryAllocationSize succeeded")
            } catch let VulkanError.bufferTooLarge(bytes, reported, _) {
                #expect(bytes == limit + 1)
                #expect(reported <= limit)
            }
            let heapTotal = device.capabilities.memoryHeaps.map(\.bytes).reduce(0, +)
            #expect(throws: VulkanError.self) { _ = try device.makeBuffer(byteCount: heapTotal * 4) }
        }
    }

    @Test func rangesOutsideTheBufferAreErrors() throws {
        try withDevice { device in
            let buffer = try device.makeBuffer(byteCount: 64)
            #expect(throws: VulkanError.rangeOutOfBounds(offset: 60, bytes: 8, bufferBytes: 64)) {
                _ = try buffer.slice(offset: 60, byteCount: 8)
            }
            #expect(throws: VulkanError.self) { _ = try buffer.slice(offset: -4, byteCount: 8) }
            #expect(try buffer.slice(offset: 0, byteCount: 0).byteCount == 0)  // an empty range
            #expect(throws: VulkanError.self) { _ = try buffer.slice(offset: 0, byteCount: -4) }
            #expect(throws: VulkanError.self) { _ = try buffer.read(UInt32.self, count: 17) }
            #expect(throws: VulkanError.self) { try buffer.write([UInt32](repeating: 1, count: 4), at: 52) }
            #expect(throws: VulkanError.self) { _ = try buffer.slice(offset: Int.max - 2, byteCount: 8) }
        }
    }

    @Test func bindingBeyondMaxStorageBufferRangeIsATypedError() throws {
        try withDevice { device in
            let range = device.capabilities.maxStorageBufferRange
            guard range + 16 <= device.capabilities.maxMemoryAllocationBytes, range <= 1 << 30 else { return }
            let big = try device.makeBuffer(byteCount: range + 16)
            let out = try device.makeBuffer(byteCount: range + 16)
            let kernel = try device.kernel(KernelDescriptor(
                shader: testAffineShader, bindings: 2, specialization: ["local_size_x": .u32(64)]))
            let stream = try device.makeStream()
            #expect(throws: VulkanError.bindingTooLarge(bytes: range + 16, maxStorageBufferRange: range)) {
                try stream.dispatch(kernel, bindings: [big.whole, out.whole], push: AffinePush(n: UInt32(1), bias: Float(0)), groups: (1, 1, 1))
            }
            // A binding of exactly the limit is fine.
            try stream.dispatch(kernel, bindings: [big.slice(offset: 0, byteCount: range), out.slice(offset: 16, byteCount: range)],
                                push: AffinePush(n: UInt32(1), bias: Float(0)), groups: (1, 1, 1))
            try stream.synchronize()
        }
    }

    @Test func misalignedBindingOffsetIsATypedError() throws {
        try withDevice { device in
            let alignment = device.capabilities.minStorageBufferOffsetAlignment
            guard alignment > 4 else { return }
            let x = try device.makeBuffer(byteCount: 1024)
            let y = try device.makeBuffer(byteCount: 1024)
            let kernel = try device.kernel(KernelDescriptor(
                shader: testAffineShader, bindings: 2, specialization: ["local_size_x": .u32(64)]))
            let stream = try device.makeStream()
            #expect(throws: VulkanError.misalignedOffset(offset: 4, alignment: alignment)) {
                try stream.dispatch(kernel, bindings: [x.slice(offset: 4, byteCount: 64), y.whole],
                                    push: AffinePush(n: UInt32(1), bias: Float(0)), groups: (1, 1, 1))
            }
        }
    }
}
