import Testing
import VkAttn
import TestSupport

/// The device-layer pieces the parallel schedulers stand on: host-signaled timeline
/// semaphores, GPU clocks mapped to the host clock, host copies between devices.
@Suite("Parallel: device layer")
struct ParallelDeviceLayerTests {
    @Test func submissionWaitsForAHostSignal() async throws {
        let seed = testSeed()
        try await withDevice { device in
            let semaphore = try TimelineSemaphore(device: device)
            let buffer = try device.makeBuffer([UInt32](repeating: 0, count: 64))
            let stream = try device.makeStream()
            try stream.wait(for: semaphore, value: 1)
            try stream.fill(buffer.whole, word: 7)
            let submission = try stream.submit()
            try await Task.sleep(nanoseconds: 20_000_000)
            #expect(!submission.isComplete, "the fill ran before the semaphore was signaled (seed \(seed))")
            try semaphore.signal(1)
            try submission.wait()
            try stream.synchronize()
            #expect(try buffer.read(UInt32.self, count: 64).allSatisfy { $0 == 7 }, "seed \(seed)")
            #expect(semaphore.value == 1)
        }
    }

    @Test func gpuClockMapsTimestampsIntoTheHostInterval() throws {
        try withDevice { device in
            let clock = try GPUClock.calibrate(device)
            let stream = try device.makeStream()
            let buffer = try device.makeBuffer(of: UInt32.self, count: 1 << 16)
            let before = HostClock.nanoseconds()
            let start = try stream.timestamp()
            try stream.fill(buffer.whole, word: 1)
            try stream.barrier()
            let end = try stream.timestamp()
            try stream.synchronize()
            let after = HostClock.nanoseconds()
            let t0 = clock.hostNanoseconds(ticks: try stream.ticks(of: start))
            let t1 = clock.hostNanoseconds(ticks: try stream.ticks(of: end))
            let slack = clock.uncertaintyNanoseconds + 1_000_000
            #expect(t0 <= t1, "\(clock.method): start \(t0) after end \(t1)")
            #expect(t0 >= Double(before) - slack && t1 <= Double(after) + slack,
                    "\(clock.method): [\(t0), \(t1)] outside the host bracket [\(before), \(after)] +- \(slack)")
        }
    }

    @Test func hostCopyBetweenTwoLogicalDevices() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        let values = rng.words(1000)
        let log = ValidationLog()
        do {
            let instance = try Instance(log: log)
            let physical = try instance.selectDevice()
            let a = try Device(physicalDevice: physical), b = try Device(physicalDevice: physical)
            let source = try a.makeBuffer(values)
            let destination = try b.makeBuffer([UInt32](repeating: 0, count: 1010))
            if source.isHostVisible && destination.isHostVisible {
                try Buffer.hostCopy(from: try source.slice(of: UInt32.self, first: 3, count: 997),
                                    to: try destination.slice(of: UInt32.self, first: 10, count: 997))
                let got = try destination.read(UInt32.self, count: 1010)
                #expect(Array(got[10..<1007]) == Array(values[3..<1000]), "seed \(seed)")
                #expect(got[0..<10].allSatisfy { $0 == 0 } && got[1007...].allSatisfy { $0 == 0 }, "guard words written, seed \(seed)")
            }
            #expect(throws: VulkanError.self) {
                try Buffer.hostCopy(from: source.whole, to: try destination.slice(of: UInt32.self, first: 0, count: 999))
            }
        }
        expectClean(log)
    }
}
