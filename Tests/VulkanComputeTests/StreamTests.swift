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

    // MARK: Waiting from async code

    @Test func completionAfterADispatchReturnsTheResultAndTheTimestamps() async throws {
        let seed = testSeed()
        var rng = SeededRandomForTests(seed: seed)
        let x = rng.floats(5000)
        try await withDevice { device in
            let n = x.count
            let xb = try device.makeBuffer(x)
            let yb = try device.makeBuffer(of: Float.self, count: n)
            let kernel = try device.kernel(affineDescriptor(scale: 2, step: 1))
            let stream = try device.makeStream()
            let start = try stream.timestamp()
            try stream.dispatch(kernel, bindings: [xb.whole, yb.whole], push: AffinePush(n: UInt32(n), bias: Float(0.25)), groups: ((n + 63) / 64, 1, 1))
            try stream.barrier()
            let end = try stream.timestamp()
            try await stream.completion()
            let y = try yb.read(Float.self, count: n)
            #expect((0..<n).allSatisfy { abs(y[$0] - (2 * x[$0] + 0.25 + Float($0))) <= 1e-3 }, "seed \(seed)")
            #expect(try stream.nanoseconds(from: start, to: end) >= 0)
            try await stream.completion()  // nothing pending: returns at once
        }
    }

    /// A stream keeps the semaphore it waits on alive until the work is done: the caller may
    /// drop its own reference right after recording the wait (the handle must not be destroyed
    /// under a pending submission; the validation layer would report it).
    @Test func aWaitedSemaphoreLivesAsLongAsTheWork() throws {
        try withDevice { device in
            let target = try device.makeBuffer(of: UInt32.self, count: 64)
            let stream = try device.makeStream()
            weak var weakGate: TimelineSemaphore?
            do {
                let gate = try TimelineSemaphore(device: device, initialValue: 1)
                try stream.wait(for: gate, value: 1)
                weakGate = gate
            }
            #expect(weakGate != nil, "the stream dropped a semaphore its next submission waits on")
            try stream.fill(target.whole, word: 7)
            try stream.synchronize()
            #expect(try target.read(UInt32.self, count: 64).allSatisfy { $0 == 7 })
        }
    }

    /// Many tasks wait on one submission that the GPU cannot finish until the host signals a
    /// semaphore from yet another task: were the waits holding threads of the cooperative pool
    /// (one per core), the signaling task would never run.
    @Test func manyConcurrentCompletionsNeverHoldAThread() async throws {
        try await withDevice { device in
            let n = 4096
            let gate = try TimelineSemaphore(device: device)
            defer { if gate.value < 1 { try? gate.signal(1) } }
            let target = try device.makeBuffer(of: UInt32.self, count: n)
            let stream = try device.makeStream()
            try stream.wait(for: gate, value: 1)
            try stream.fill(target.whole, word: 0xC0FFEE)
            let submission = try stream.submit()
            let waiters = 64
            let finished = try await withThrowingTaskGroup(of: Int.self) { group in
                for _ in 0..<waiters {
                    group.addTask { try await submission.completion(timeoutNanoseconds: 60_000_000_000); return 1 }
                }
                group.addTask {
                    try await Task.sleep(nanoseconds: 20_000_000)
                    #expect(!submission.isComplete, "the fill ran before the gate opened")
                    try gate.signal(1)
                    return 0
                }
                return try await group.reduce(0, +)
            }
            #expect(finished == waiters)
            #expect(try submission.poll())
            try await stream.completion()
            #expect(try target.read(UInt32.self, count: n).allSatisfy { $0 == 0xC0FFEE })

            // And many streams, each awaited by its own task (actors: the wait runs on the
            // caller's actor, so a stream that is an actor's state needs no Sendable).
            let seed = testSeed()
            let sums = try await withThrowingTaskGroup(of: Bool.self) { group in
                for t in 0..<16 {
                    group.addTask {
                        var rng = SeededRandomForTests(seed: seed &+ UInt64(t))
                        let x = rng.floats(700 + 13 * t)
                        let owner = try StreamOwner(device)
                        let y = try await owner.affine(x, scale: Float(t), rounds: 3)
                        return (0..<x.count).allSatisfy { abs(y[$0] - (x[$0] * Float(t) + 0.5 + Float($0))) <= 1e-3 }
                    }
                }
                return try await group.reduce(into: [Bool]()) { $0.append($1) }
            }
            #expect(sums.count == 16 && sums.allSatisfy { $0 }, "seed \(seed)")
        }
    }

    /// Cancellation ends the wait with CancellationError; the GPU work still completes, and
    /// the stream keeps it (and what it uses) until it is collected or the stream is released.
    @Test func cancelledCompletionLeavesTheWorkAliveAndPending() async throws {
        try await withDevice { device in
            let n = 1 << 12
            let target = try device.makeBuffer(of: UInt32.self, count: n)
            let gate = try TimelineSemaphore(device: device)
            defer { if gate.value < 1 { try? gate.signal(1) } }
            let stream = try device.makeStream()
            try stream.wait(for: gate, value: 1)
            try stream.fill(target.whole, word: 7)
            let submission = try stream.submit()

            // A waiter on the submission, cancelled while the GPU is held back.
            let waiter = Task { try await submission.completion() }
            try await Task.sleep(nanoseconds: 5_000_000)
            waiter.cancel()
            await #expect(throws: CancellationError.self) { try await waiter.value }
            #expect(!submission.isComplete, "cancelling the wait must not finish (or drop) the GPU work")

            // A task cancelled before it waits: the wait throws at once, the work stays pending.
            let cancelledWait = Task {
                withUnsafeCurrentTask { $0?.cancel() }
                do {
                    try await submission.completion()
                    return false
                } catch is CancellationError {
                    return true
                }
            }
            #expect(try await cancelledWait.value)

            // Wait again after opening the gate: the same work, collected now.
            try gate.signal(1)
            try await stream.completion()
            #expect(try target.read(UInt32.self, count: n).allSatisfy { $0 == 7 })
        }
    }

    /// A stream whose completion() was cancelled and that is then released while its GPU work
    /// is still held back: its deinit waits for the GPU before freeing anything (the validation
    /// layer reports objects destroyed while in use), and the work lands.
    @Test func aStreamReleasedAfterACancelledCompletionFinishesItsWork() async throws {
        try await withDevice { device in
            let n = 1 << 12
            let target = try device.makeBuffer(of: UInt32.self, count: n)
            let gate = try TimelineSemaphore(device: device)
            defer { if gate.value < 1 { try? gate.signal(1) } }
            let outcome = try await Task { () -> (cancelled: Bool, pending: Bool, opener: Task<Void, Never>) in
                let stream = try device.makeStream()
                try stream.wait(for: gate, value: 1)
                try stream.fill(target.whole, word: 9)
                withUnsafeCurrentTask { $0?.cancel() }
                var cancelled = false
                do { try await stream.completion() } catch is CancellationError { cancelled = true }
                let pending = !(try stream.submit().isComplete)
                // Open the gate a little later, from elsewhere, while this stream's deinit waits.
                let opener = Task.detached {
                    try? await Task.sleep(nanoseconds: 20_000_000)
                    try? gate.signal(1)
                }
                return (cancelled, pending, opener)
            }.value
            await outcome.opener.value  // its reference to the gate must be gone before the device goes
            #expect(outcome.cancelled && outcome.pending)
            #expect(gate.value == 1)
            #expect(try target.read(UInt32.self, count: n).allSatisfy { $0 == 9 })
        }
    }

    @Test func completionTimesOutTypedAndCanBeRepeated() async throws {
        try await withDevice { device in
            let target = try device.makeBuffer(of: UInt32.self, count: 256)
            let gate = try TimelineSemaphore(device: device)
            defer { if gate.value < 1 { try? gate.signal(1) } }
            let stream = try device.makeStream()
            try stream.wait(for: gate, value: 1)
            try stream.fill(target.whole, word: 3)
            await #expect(throws: VulkanError.self) { try await stream.completion(timeoutNanoseconds: 10_000_000) }
            do {
                try await stream.completion(timeoutNanoseconds: 0)
                Issue.record("a zero timeout on pending work returned")
            } catch let error as VulkanError {
                guard case .timeout = error else { Issue.record("expected a timeout, got \(error)"); return }
                #expect(!error.isDeviceLost)
            }
            try gate.signal(1)
            try await stream.completion(timeoutNanoseconds: 60_000_000_000)
            #expect(try target.read(UInt32.self, count: 256).allSatisfy { $0 == 3 })
        }
    }

    /// An actor re-entered while its stream's completion() is suspended records more work on
    /// that stream: the same completion() submits and waits for that work too before it
    /// recycles the command buffers.
    @Test func workRecordedDuringACompletionIsWaitedForToo() async throws {
        try await withDevice { device in
            let n = 2048
            let first = try device.makeBuffer(of: UInt32.self, count: n)
            let second = try device.makeBuffer(of: UInt32.self, count: n)
            let gate = try TimelineSemaphore(device: device)
            defer { if gate.value < 1 { try? gate.signal(1) } }
            let owner = try StreamOwner(device)
            let gated = Task { try await owner.fillAndComplete(first, word: 1, after: gate) }
            while await !owner.waiting { try await Task.sleep(nanoseconds: 1_000_000) }
            try await owner.record(fill: second, word: 2)
            try gate.signal(1)
            try await gated.value
            #expect(try first.read(UInt32.self, count: n).allSatisfy { $0 == 1 })
            #expect(try second.read(UInt32.self, count: n).allSatisfy { $0 == 2 })
        }
    }
}

/// A stream as an actor's state: Stream is not Sendable, and completion() runs on the actor.
private actor StreamOwner {
    let device: Device
    let stream: Stream
    private(set) var waiting = false

    init(_ device: Device) throws {
        self.device = device
        self.stream = try device.makeStream()
    }

    /// y = x * scale + 0.5 + i, `rounds` times, awaiting each round.
    func affine(_ x: [Float], scale: Float, rounds: Int) async throws -> [Float] {
        let n = x.count
        let xb = try device.makeBuffer(x)
        let yb = try device.makeBuffer(of: Float.self, count: n)
        let kernel = try device.kernel(affineDescriptor(scale: scale, step: 1))
        for _ in 0..<rounds {
            try stream.dispatch(kernel, bindings: [xb.whole, yb.whole], push: AffinePush(n: UInt32(n), bias: Float(0.5)), groups: ((n + 63) / 64, 1, 1))
            try await stream.completion()
        }
        return try yb.read(Float.self, count: n)
    }

    func fillAndComplete(_ buffer: Buffer, word: UInt32, after gate: TimelineSemaphore) async throws {
        try stream.wait(for: gate, value: 1)
        try stream.fill(buffer.whole, word: word)
        waiting = true
        defer { waiting = false }
        try await stream.completion()
    }

    func record(fill buffer: Buffer, word: UInt32) throws {
        try stream.fill(buffer.whole, word: word)
    }
}
