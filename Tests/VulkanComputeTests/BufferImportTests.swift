import Testing
@testable import VulkanCompute
import TestSupport

/// Buffers over one host allocation imported into several logical devices
/// (VK_EXT_external_memory_host): what the communicator's imported-host path stands on.
@Suite("Buffers: imported host allocations")
struct BufferImportTests {
    @Test func capabilitiesReportTheExtension() throws {
        try withDevice { device in
            let offered = device.capabilities.extensions.contains("VK_EXT_external_memory_host")
            #expect(device.capabilities.externalMemoryHost == offered)
            #expect(device.enabled.externalMemoryHost == offered)
            if let alignment = device.capabilities.minImportedHostPointerAlignment {
                #expect(alignment > 0 && alignment & (alignment - 1) == 0, "alignment \(alignment)")
            }
        }
    }

    /// Device A's GPU copies random bytes into the allocation; device B's GPU copies them out of
    /// its own import; in both directions, at an offset, with awkward sizes.
    @Test(arguments: [1, 4093, 12_289])
    func bytesWrittenByOneDeviceAreReadByAnother(count: Int) throws {
        let seed = testSeed()
        var rng = SeededRandomForTests(seed: seed)
        try withDevice { a in
            guard a.capabilities.externalMemoryHost else {
                #expect(throws: VulkanError.self) { _ = try HostAllocation(byteCount: count, importableBy: [a]) }
                return
            }
            let b = try Device(physicalDevice: a.physicalDevice)
            let alignment = try HostAllocation(byteCount: 1, importableBy: [a, b]).alignment
            let half = (count + alignment - 1) / alignment * alignment
            let allocation = try HostAllocation(byteCount: 2 * half, importableBy: [a, b])
            #expect(allocation.byteCount == 2 * half && allocation.byteCount % allocation.alignment == 0)
            let onA = try a.importBuffer(allocation)
            // B sees the second half only through an import at an offset.
            let onB = try b.importBuffer(allocation, offset: half, byteCount: half)
            let onBFirst = try Buffer(importing: allocation, byteCount: half, on: b)
            #expect(onA.hostAllocation === allocation && onB.hostAllocation === allocation)
            #expect(onA.isHostVisible && onB.location == .host)

            // A -> B through the second half.
            let forward = rng.bytes(count)
            let sourceA = try a.makeBuffer(forward)
            let streamA = try a.makeStream()
            try streamA.copy(from: sourceA.whole, to: onA.slice(offset: half, byteCount: count))
            try streamA.synchronize()
            let destinationB = try b.makeBuffer([UInt8](repeating: 0xA5, count: count))
            let streamB = try b.makeStream()
            try streamB.copy(from: onB.slice(offset: 0, byteCount: count), to: destinationB.whole)
            try streamB.synchronize()
            #expect(try destinationB.read(UInt8.self, count: count) == forward, "A -> B, \(count) bytes, seed \(seed)")

            // B -> A through the first half, on B's transfer stream.
            let backward = rng.bytes(count)
            let sourceB = try b.makeBuffer(backward)
            let transferB = try b.makeStream(queue: .transfer)
            try transferB.copy(from: sourceB.whole, to: onBFirst.slice(offset: 0, byteCount: count))
            try transferB.synchronize()
            let destinationA = try a.makeBuffer([UInt8](repeating: 0x5A, count: count))
            try streamA.copy(from: onA.slice(offset: 0, byteCount: count), to: destinationA.whole)
            try streamA.synchronize()
            #expect(try destinationA.read(UInt8.self, count: count) == backward, "B -> A, \(count) bytes, seed \(seed)")
        }
    }

    /// Importing buffers keep the allocation alive; it goes once the last of them is gone.
    @Test func allocationLivesAsLongAsItsBuffers() throws {
        let seed = testSeed()
        var rng = SeededRandomForTests(seed: seed)
        try withDevice { device in
            guard device.capabilities.externalMemoryHost else { return }
            weak var watched: HostAllocation?
            var buffer: Buffer?
            do {
                let allocation = try HostAllocation(byteCount: 100, importableBy: [device])
                watched = allocation
                buffer = try device.importBuffer(allocation)
            }
            #expect(watched != nil, "the allocation went while a buffer imported it")
            let words = rng.words(25)
            try buffer?.write(words)
            #expect(try buffer?.read(UInt32.self, count: 25) == words, "seed \(seed)")
            buffer = nil
            #expect(watched == nil, "the allocation outlived its last buffer")
        }
    }

    @Test func badImportsAreTypedErrors() throws {
        try withDevice { device in
            #expect(throws: VulkanError.self) { _ = try HostAllocation(byteCount: 0) }
            #expect(throws: VulkanError.self) { _ = try HostAllocation(byteCount: 64, alignment: 48) }
            guard let alignment = device.capabilities.minImportedHostPointerAlignment else {
                let allocation = try HostAllocation(byteCount: 64)
                #expect(throws: VulkanError.self) { _ = try device.importBuffer(allocation) }
                return
            }
            let allocation = try HostAllocation(byteCount: 3 * alignment, importableBy: [device])
            #expect(throws: VulkanError.misalignedImport(offset: 8, bytes: alignment, alignment: alignment)) {
                _ = try device.importBuffer(allocation, offset: 8, byteCount: alignment)
            }
            if alignment > 1 {
                #expect(throws: VulkanError.misalignedImport(offset: 0, bytes: alignment - 1, alignment: alignment)) {
                    _ = try device.importBuffer(allocation, offset: 0, byteCount: alignment - 1)
                }
            }
            #expect(throws: VulkanError.rangeOutOfBounds(offset: 2 * alignment, bytes: 2 * alignment, bufferBytes: 3 * alignment)) {
                _ = try device.importBuffer(allocation, offset: 2 * alignment, byteCount: 2 * alignment)
            }
        }
    }
}
