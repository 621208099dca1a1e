import CVulkan

/// A point on a queue's timeline: the completion of one submission.
public struct Submission: Sendable {
    /// The device whose queue runs the submission.
    public let device: Device
    let queue: Queue
    /// The queue timeline's value that marks this submission done.
    public let value: UInt64

    /// Whether the GPU has finished this submission; false also when the counter cannot be
    /// read (a lost device), so loops that must end should use `poll()` or `completion()`.
    public var isComplete: Bool { (try? poll()) ?? false }

    /// Whether the GPU has finished this submission, without waiting.
    /// - Returns: true once the queue's timeline has reached this submission's value.
    /// - Throws: `VulkanError.call` when the counter cannot be read (`isDeviceLost` after a
    ///   device loss).
    public func poll() throws -> Bool {
        var current: UInt64 = 0
        try check(vkGetSemaphoreCounterValue(device.handle, queue.timeline, &current), "vkGetSemaphoreCounterValue")
        return current >= value
    }

    /// Blocks until the GPU has finished this submission.
    /// Blocks the calling thread: from async code, use ``completion(timeoutNanoseconds:check:isolation:)``.
    /// - Parameter timeoutNanoseconds: How long to wait at most (`.max`: no limit).
    /// - Throws: `VulkanError.timeout` when the time passed first, `VulkanError.call` when the
    ///   wait fails (`isDeviceLost` after a device loss).
    public func wait(timeoutNanoseconds: UInt64 = .max) throws {
        var semaphore: VkSemaphore? = queue.timeline
        var waitValue = value
        let result = withUnsafePointer(to: &semaphore) { s in
            withUnsafePointer(to: &waitValue) { v in
                var info = VkSemaphoreWaitInfo()
                info.sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO
                info.semaphoreCount = 1
                info.pSemaphores = s
                info.pValues = v
                return vkWaitSemaphores(device.handle, &info, timeoutNanoseconds)
            }
        }
        if result == VK_TIMEOUT { throw VulkanError.timeout("\(queue.kind) submission \(value) on \(device.label)") }
        try check(result, "vkWaitSemaphores")
    }
}

/// A GPU timestamp recorded in a stream; read it after `synchronize()`.
public struct Timestamp: Sendable, Hashable {
    let index: Int
    let generation: Int
}

/// Records dispatches, copies and barriers into command buffers and submits them to one
/// queue of a device.
///
/// Not Sendable: a stream is used by one task at a time (Vulkan command pools are externally
/// synchronized). Create one stream per task; they can share the device.
///
/// Order: commands run in recording order only where a `barrier()` separates them. Host
/// writes before `submit()` are visible to the GPU; GPU writes are visible to the host after
/// `synchronize()` or `completion()` (or after waiting on the submission).
public final class Stream {
    /// The device whose queue runs the stream's work.
    public let device: Device
    /// The queue the stream submits to.
    public let queueKind: QueueKind
    let queue: Queue
    private let commandPool: VkCommandPool
    private var current: VkCommandBuffer?
    private var recorded = 0
    private var spare: [VkCommandBuffer] = []
    private var inFlight: [VkCommandBuffer] = []
    private var descriptorPools: [VkDescriptorPool] = []
    private var poolIndex = 0
    private var setsLeft = 0
    private var queryPool: VkQueryPool?
    private var queriesUsed = 0
    private var generation = 0
    var timestampTicks: [UInt64] = []
    var resultsGeneration = -1
    var retained: [AnyObject] = []
    var waits: [(semaphore: VkSemaphore, value: UInt64)] = []
    private var lastSubmission: Submission?
    /// Dispatches recorded since the stream was made (never reset): tests read it to prove that
    /// an op recorded no kernel (zero-sized inputs), and how many it recorded otherwise.
    package private(set) var dispatchesRecorded = 0
    /// Buffer copies (vkCmdCopyBuffer) recorded since the stream was made; empty copies record
    /// nothing and are not counted.
    package private(set) var copiesRecorded = 0
    /// Buffer fills (vkCmdFillBuffer) recorded since the stream was made; empty fills record
    /// nothing and are not counted.
    package private(set) var fillsRecorded = 0

    static let setsPerPool = 64
    static let descriptorsPerPool = 64 * 16
    /// The most timestamps a stream records between two synchronizations.
    public static let maxTimestamps = 1024

    /// A stream on one queue of `device`; ``Device/makeStream(queue:)`` says the same.
    /// - Parameters:
    ///   - device: The device to record for.
    ///   - kind: The compute queue (dispatches and copies) or the transfer queue (copies only).
    /// - Throws: `VulkanError.call` when the command pool cannot be made.
    public init(device: Device, queue kind: QueueKind = .compute) throws {
        self.device = device
        self.queueKind = kind
        self.queue = device.queue(kind)
        var info = VkCommandPoolCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO
        info.queueFamilyIndex = UInt32(queue.family)
        info.flags = VkCommandPoolCreateFlags(VK_COMMAND_POOL_CREATE_TRANSIENT_BIT.rawValue)
        var pool: VkCommandPool?
        try check(vkCreateCommandPool(device.handle, &info, nil, &pool), "vkCreateCommandPool")
        guard let pool else { throw VulkanError.call("vkCreateCommandPool", result: -3) }
        self.commandPool = pool
        device.track("stream", 1)
    }

    deinit {
        device.track("stream", -1)
        if let lastSubmission { try? lastSubmission.wait() }
        for pool in descriptorPools { vkDestroyDescriptorPool(device.handle, pool, nil) }
        if let queryPool { vkDestroyQueryPool(device.handle, queryPool, nil) }
        vkDestroyCommandPool(device.handle, commandPool, nil)
    }

    // MARK: Recording

    /// Dispatches `kernel` over `groups` workgroups with `bindings` bound to 0..<n of set 0
    /// and `push` as its push constants.
    /// - Parameters:
    ///   - kernel: a pipeline of this stream's device.
    ///   - bindings: one slice per binding of the kernel, in binding order; an empty slice is
    ///     bound as its buffer's first bytes (Vulkan has no empty descriptor ranges).
    ///   - push: the Swift twin of the shader's push-constant block (checked member by member
    ///     against the shader's `ShaderInterface`).
    ///   - groups: workgroups along x, y, z (0 on any axis records nothing).
    /// - Throws: `VulkanError.invalidArgument` for a foreign kernel, a binding count, a push
    ///   block that does not mirror the shader's, or a grid beyond the device's limits.
    public func dispatch(_ kernel: Kernel, bindings: [BufferSlice], push: some PushConstantBlock,
                         groups: (x: Int, y: Int, z: Int)) throws {
        let words = try PushConstantWords(push, interface: kernel.descriptor.shader.interface, shader: kernel.descriptor.shader.name)
        try dispatch(kernel, bindings: bindings, words: words, groups: groups)
    }

    /// Dispatches a kernel whose shader has no push constants.
    /// - Parameters:
    ///   - kernel: a pipeline of this stream's device.
    ///   - bindings: one slice per binding of the kernel, in binding order.
    ///   - groups: workgroups along x, y, z.
    /// - Throws: as the dispatch with push constants; also when the shader declares some.
    public func dispatch(_ kernel: Kernel, bindings: [BufferSlice], groups: (x: Int, y: Int, z: Int)) throws {
        try dispatch(kernel, bindings: bindings, words: PushConstantWords(), groups: groups)
    }

    private func dispatch(_ kernel: Kernel, bindings: [BufferSlice], words push: PushConstantWords,
                          groups: (x: Int, y: Int, z: Int)) throws {
        let d = kernel.descriptor
        guard kernel.device === device else {
            throw VulkanError.invalidArgument("kernel \(d.shader.name) belongs to \(kernel.device.label), stream to \(device.label)")
        }
        guard queue.kind == .compute || !device.hasDedicatedTransferQueue else {
            throw VulkanError.invalidArgument("dispatch of \(d.shader.name) on a transfer stream")
        }
        guard bindings.count == d.bindings else {
            throw VulkanError.invalidArgument("kernel \(d.shader.name) takes \(d.bindings) buffers, got \(bindings.count)")
        }
        guard push.byteCount == d.pushConstantBytes else {
            throw VulkanError.invalidArgument("kernel \(d.shader.name) takes \(d.pushConstantBytes) push-constant bytes, got \(push.byteCount)")
        }
        let limits = device.capabilities.maxWorkgroupCount
        for (axis, count) in [groups.x, groups.y, groups.z].enumerated() where count < 0 || count > limits[axis] {
            throw VulkanError.invalidArgument("kernel \(d.shader.name): \(count) workgroups on axis \(axis), device allows \(limits[axis])")
        }
        for slice in bindings { try checkBinding(slice) }
        if groups.x == 0 || groups.y == 0 || groups.z == 0 { return }

        let cb = try commandBuffer()
        let set = try allocateDescriptorSet(kernel.object.setLayout)
        // An empty slice (a zero-sized tensor) binds its buffer's first bytes: a descriptor's
        // range is never zero, and the kernel, told the size, reads none of them.
        let infos = bindings.map { slice in
            slice.byteCount == 0
                ? VkDescriptorBufferInfo(buffer: slice.buffer.handle, offset: 0,
                                         range: VkDeviceSize(min(slice.buffer.backingBytes, Buffer.emptyBackingBytes)))
                : VkDescriptorBufferInfo(buffer: slice.buffer.handle, offset: VkDeviceSize(slice.offset), range: VkDeviceSize(slice.byteCount))
        }
        infos.withUnsafeBufferPointer { infoBuffer in
            var writes = (0..<bindings.count).map { i -> VkWriteDescriptorSet in
                var w = VkWriteDescriptorSet()
                w.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
                w.dstSet = set
                w.dstBinding = UInt32(i)
                w.descriptorCount = 1
                w.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
                w.pBufferInfo = infoBuffer.baseAddress.map { $0 + i }
                return w
            }
            vkUpdateDescriptorSets(device.handle, UInt32(writes.count), &writes, 0, nil)
        }
        vkCmdBindPipeline(cb, VK_PIPELINE_BIND_POINT_COMPUTE, kernel.object.pipeline)
        var setOptional: VkDescriptorSet? = set
        vkCmdBindDescriptorSets(cb, VK_PIPELINE_BIND_POINT_COMPUTE, kernel.object.layout, 0, 1, &setOptional, 0, nil)
        if push.byteCount > 0 {
            push.words.withUnsafeBytes {
                vkCmdPushConstants(cb, kernel.object.layout, VkShaderStageFlags(VK_SHADER_STAGE_COMPUTE_BIT.rawValue),
                                   0, UInt32($0.count), $0.baseAddress)
            }
        }
        vkCmdDispatch(cb, UInt32(groups.x), UInt32(groups.y), UInt32(groups.z))
        retained.append(kernel.object)
        retained.append(contentsOf: bindings.map { $0.buffer as AnyObject })
        recorded += 1
        dispatchesRecorded += 1
    }

    /// Copies `source` into `destination` (equal sizes) with vkCmdCopyBuffer; an empty copy
    /// (0 bytes) is checked and records nothing.
    /// - Parameters:
    ///   - source: The bytes to read; a buffer of this stream's device.
    ///   - destination: Where they go; a buffer of this device, the same size as `source`.
    /// - Throws: `VulkanError.invalidArgument` for different sizes or a buffer of another device,
    ///   `VulkanError.rangeOutOfBounds` for a range outside its buffer.
    public func copy(from source: BufferSlice, to destination: BufferSlice) throws {
        guard source.byteCount == destination.byteCount else {
            throw VulkanError.invalidArgument("copy of \(source.byteCount) bytes into a range of \(destination.byteCount) bytes")
        }
        for s in [source, destination] {
            guard s.buffer.device === device else {
                throw VulkanError.invalidArgument("buffer of \(s.buffer.device.label) used on a stream of \(device.label)")
            }
            try s.buffer.checkRange(offset: s.offset, bytes: s.byteCount)
        }
        guard source.byteCount > 0 else { return }
        let cb = try commandBuffer()
        var region = VkBufferCopy(srcOffset: VkDeviceSize(source.offset), dstOffset: VkDeviceSize(destination.offset),
                                  size: VkDeviceSize(source.byteCount))
        vkCmdCopyBuffer(cb, source.buffer.handle, destination.buffer.handle, 1, &region)
        retained.append(source.buffer)
        retained.append(destination.buffer)
        recorded += 1
        copiesRecorded += 1
    }

    /// Copies byte ranges of `source` into `destination` with one vkCmdCopyBuffer (a gather or
    /// scatter of rows); no regions records nothing.
    /// - Parameters:
    ///   - source: The buffer to read; of this stream's device.
    ///   - destination: The buffer to write; of this device, not `source` (ranges may not overlap).
    ///   - regions: (source offset, destination offset, bytes) per range, in bytes; every range
    ///     inside its buffer, destination ranges disjoint.
    /// - Throws: `VulkanError.invalidArgument` for a buffer of another device or the same buffer,
    ///   `VulkanError.rangeOutOfBounds` for a range outside its buffer.
    public func copy(from source: Buffer, to destination: Buffer, regions: [(source: Int, destination: Int, bytes: Int)]) throws {
        for b in [source, destination] where b.device !== device {
            throw VulkanError.invalidArgument("buffer of \(b.device.label) used on a stream of \(device.label)")
        }
        guard source !== destination else {
            throw VulkanError.invalidArgument("a region copy within one buffer")
        }
        for r in regions {
            try source.checkRange(offset: r.source, bytes: r.bytes)
            try destination.checkRange(offset: r.destination, bytes: r.bytes)
        }
        let copies = regions.filter { $0.bytes > 0 }.map {
            VkBufferCopy(srcOffset: VkDeviceSize($0.source), dstOffset: VkDeviceSize($0.destination), size: VkDeviceSize($0.bytes))
        }
        guard !copies.isEmpty else { return }
        let cb = try commandBuffer()
        copies.withUnsafeBufferPointer { vkCmdCopyBuffer(cb, source.handle, destination.handle, UInt32($0.count), $0.baseAddress) }
        retained.append(source)
        retained.append(destination)
        recorded += 1
        copiesRecorded += 1
    }

    /// Fills `destination` with a repeated 32-bit word (vkCmdFillBuffer): offset and size must
    /// be multiples of 4. An empty range (0 bytes) is checked and records nothing.
    /// - Parameters:
    ///   - destination: The range to fill; a buffer of this stream's device.
    ///   - word: The 32-bit pattern written to every word.
    /// - Throws: `VulkanError.invalidArgument` for a misaligned range or a buffer of another
    ///   device, `VulkanError.rangeOutOfBounds` for a range outside its buffer.
    public func fill(_ destination: BufferSlice, word: UInt32) throws {
        guard destination.buffer.device === device else {
            throw VulkanError.invalidArgument("buffer of \(destination.buffer.device.label) used on a stream of \(device.label)")
        }
        try destination.buffer.checkRange(offset: destination.offset, bytes: destination.byteCount)
        guard destination.offset % 4 == 0, destination.byteCount % 4 == 0 else {
            throw VulkanError.invalidArgument("fill range [\(destination.offset), +\(destination.byteCount)) is not 4-byte aligned")
        }
        guard destination.byteCount > 0 else { return }
        let cb = try commandBuffer()
        vkCmdFillBuffer(cb, destination.buffer.handle, VkDeviceSize(destination.offset), VkDeviceSize(destination.byteCount), word)
        retained.append(destination.buffer)
        recorded += 1
        fillsRecorded += 1
    }

    /// Makes every earlier dispatch and copy of this stream finish (and its writes visible)
    /// before any later one starts.
    /// - Throws: `VulkanError.call` when a command buffer cannot be allocated or begun.
    public func barrier() throws {
        let cb = try commandBuffer()
        var b = VkMemoryBarrier()
        b.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
        b.srcAccessMask = VkAccessFlags(VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue)
        b.dstAccessMask = VkAccessFlags(VK_ACCESS_SHADER_READ_BIT.rawValue | VK_ACCESS_SHADER_WRITE_BIT.rawValue
            | VK_ACCESS_TRANSFER_READ_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue)
        let stages = stageMask()
        vkCmdPipelineBarrier(cb, stages, stages, 0, 1, &b, 0, nil, 0, nil)
    }

    /// Records a GPU timestamp taken when every earlier command has completed.
    /// - Returns: The timestamp, readable with ``nanoseconds(from:to:)`` or ``ticks(of:)`` after
    ///   the next ``synchronize(timeoutNanoseconds:)`` or ``completion(timeoutNanoseconds:isolation:)``.
    /// - Throws: `VulkanError.unsupportedDevice` when the queue family has no timestamps,
    ///   `VulkanError.invalidArgument` past ``maxTimestamps`` in one batch.
    public func timestamp() throws -> Timestamp {
        guard device.capabilities.queueFamilies[queue.family].timestampValidBits > 0 else {
            throw VulkanError.unsupportedDevice(device: device.label, reason: "queue family \(queue.family) has no timestamps")
        }
        guard queriesUsed < Stream.maxTimestamps else {
            throw VulkanError.invalidArgument("more than \(Stream.maxTimestamps) timestamps before synchronize()")
        }
        let pool = try timestampPool()
        let cb = try commandBuffer()
        let index = queriesUsed
        vkCmdResetQueryPool(cb, pool, UInt32(index), 1)
        vkCmdWriteTimestamp(cb, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, pool, UInt32(index))
        queriesUsed += 1
        return Timestamp(index: index, generation: generation)
    }

    /// Makes the next submission wait until `submission` (on another queue of this device) has
    /// finished.
    /// A submission of this stream's own queue is already ordered and adds no wait.
    /// - Parameter submission: Work of a stream of this device (e.g. a copy on the transfer queue).
    /// - Throws: `VulkanError.invalidArgument` for a submission of another device (wait for it on
    ///   the host instead).
    public func wait(for submission: Submission) throws {
        guard submission.device === device else {
            throw VulkanError.invalidArgument("a stream of \(device.label) cannot wait on a submission of \(submission.device.label); wait on the host instead")
        }
        if submission.queue === queue { return }  // same queue: already ordered by the barrier rules
        waits.append((submission.queue.timeline, submission.value))
    }

    // MARK: Submission

    /// Submits what was recorded since the last submit. Returns the submission to wait on
    /// (also from other streams of the device).
    /// - Returns: The new submission; the previous one when nothing was recorded and no wait is
    ///   pending.
    /// - Throws: `VulkanError.call` when recording or the submission fails.
    @discardableResult
    public func submit() throws -> Submission {
        if current == nil && waits.isEmpty, let lastSubmission { return lastSubmission }
        let cb = try commandBuffer()
        // GPU writes -> host reads, so that reads after the wait see the results.
        var b = VkMemoryBarrier()
        b.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER
        b.srcAccessMask = VkAccessFlags(VK_ACCESS_SHADER_WRITE_BIT.rawValue | VK_ACCESS_TRANSFER_WRITE_BIT.rawValue)
        b.dstAccessMask = VkAccessFlags(VK_ACCESS_HOST_READ_BIT.rawValue)
        vkCmdPipelineBarrier(cb, stageMask(), VkPipelineStageFlags(VK_PIPELINE_STAGE_HOST_BIT.rawValue), 0, 1, &b, 0, nil, 0, nil)
        try check(vkEndCommandBuffer(cb), "vkEndCommandBuffer")
        current = nil
        let value = try queue.submit(cb, waits: waits)
        inFlight.append(cb)
        waits.removeAll()
        recorded = 0
        let submission = Submission(device: device, queue: queue, value: value)
        lastSubmission = submission
        return submission
    }

    /// Submits pending work, waits for all of it, reads the timestamps and recycles the
    /// stream's command buffers and descriptor sets. Blocks the calling thread: from async
    /// code, use `completion()`.
    /// - Parameter timeoutNanoseconds: How long to wait at most (`.max`: no limit).
    /// - Throws: `VulkanError.timeout` when the time passed first, `VulkanError.call` when a
    ///   submission or the wait fails (`isDeviceLost` after a device loss).
    public func synchronize(timeoutNanoseconds: UInt64 = .max) throws {
        if current != nil || !waits.isEmpty { try submit() }
        guard let lastSubmission else { return }
        try lastSubmission.wait(timeoutNanoseconds: timeoutNanoseconds)
        try collect()
    }

    /// `synchronize()` for async code: submits pending work and suspends (never blocking a
    /// thread) until the GPU has finished all of it, then reads the timestamps and recycles
    /// the command buffers and descriptor sets, as `synchronize()` does.
    ///
    /// Work recorded on this stream while the wait is suspended (possible when the stream is
    /// an actor's state and the actor is re-entered) is submitted and waited for too.
    ///
    /// Cancellation ends the wait, not the GPU work: the stream keeps its submitted work, and
    /// every buffer and pipeline it uses, alive until a later `synchronize()` or `completion()`
    /// collects it; releasing the stream instead blocks in its deinit until the GPU is done.
    /// Nothing is freed while the GPU may still use it.
    ///
    /// - Parameters:
    ///   - timeoutNanoseconds: how long to wait at most, in total (`.max`: no limit).
    ///   - isolation: the caller's actor (the stream is not Sendable: the wait runs there).
    /// - Throws: `CancellationError` when the task is cancelled before the GPU finished (the
    ///   stream stays pending, see above), `VulkanError.timeout`, `VulkanError.call` when a
    ///   submission or the wait fails (`isDeviceLost` after a device loss).
    public func completion(timeoutNanoseconds: UInt64 = .max, isolation: isolated (any Actor)? = #isolation) async throws {
        let start = ContinuousClock.now
        while true {
            if current != nil || !waits.isEmpty { try submit() }
            guard let pending = lastSubmission else { return }  // nothing in flight, or another wait collected it
            var left = timeoutNanoseconds
            if timeoutNanoseconds != .max {
                let (seconds, attoseconds) = start.duration(to: .now).components
                let spent = UInt64(max(0, seconds)) &* 1_000_000_000 &+ UInt64(max(0, attoseconds) / 1_000_000_000)
                left = timeoutNanoseconds > spent ? timeoutNanoseconds - spent : 0
            }
            try await pending.completion(timeoutNanoseconds: max(left, 1))
            if current == nil, waits.isEmpty, lastSubmission?.value == pending.value {
                try collect()
                return
            }
        }
    }

    /// After the last submission finished: timestamps into `timestampTicks`, command buffers
    /// and descriptor sets back to the pools, retained objects released.
    private func collect() throws {
        if queriesUsed > 0, let queryPool {
            var ticks = [UInt64](repeating: 0, count: queriesUsed)
            try ticks.withUnsafeMutableBytes { raw in
                try check(vkGetQueryPoolResults(device.handle, queryPool, 0, UInt32(queriesUsed), raw.count, raw.baseAddress, 8,
                                                VkQueryResultFlags(VK_QUERY_RESULT_64_BIT.rawValue | VK_QUERY_RESULT_WAIT_BIT.rawValue)),
                          "vkGetQueryPoolResults")
            }
            let bits = device.capabilities.queueFamilies[queue.family].timestampValidBits
            let mask: UInt64 = bits >= 64 ? .max : (1 << UInt64(bits)) - 1
            timestampTicks = ticks.map { $0 & mask }
        } else {
            timestampTicks = []
        }
        resultsGeneration = generation
        generation += 1
        queriesUsed = 0
        try check(vkResetCommandPool(device.handle, commandPool, 0), "vkResetCommandPool")
        spare += inFlight
        inFlight.removeAll()
        for pool in descriptorPools { try check(vkResetDescriptorPool(device.handle, pool, 0), "vkResetDescriptorPool") }
        poolIndex = 0
        setsLeft = descriptorPools.isEmpty ? 0 : Stream.setsPerPool
        retained.removeAll()
        self.lastSubmission = nil
    }

    /// Nanoseconds between two timestamps of the last synchronized batch.
    /// - Parameters:
    ///   - start: The earlier timestamp.
    ///   - end: The later timestamp, recorded in the same batch.
    /// - Returns: The GPU time between them (0 when `end` was recorded before `start`).
    /// - Throws: `VulkanError.invalidArgument` for a timestamp of another batch, or one not yet
    ///   synchronized.
    public func nanoseconds(from start: Timestamp, to end: Timestamp) throws -> Double {
        guard start.generation == resultsGeneration, end.generation == resultsGeneration,
              start.index < timestampTicks.count, end.index < timestampTicks.count else {
            throw VulkanError.invalidArgument("timestamps are read after synchronize(), once, for the batch that recorded them")
        }
        let ticks = end.index >= start.index ? timestampTicks[end.index] &- timestampTicks[start.index] : 0
        return Double(ticks) * device.capabilities.timestampPeriodNanoseconds
    }

    // MARK: Internals

    private func stageMask() -> VkPipelineStageFlags {
        let transfer = VK_PIPELINE_STAGE_TRANSFER_BIT.rawValue
        return VkPipelineStageFlags(queue.kind == .compute || !device.hasDedicatedTransferQueue
            ? transfer | VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT.rawValue : transfer)
    }

    private func checkBinding(_ slice: BufferSlice) throws {
        let caps = device.capabilities
        guard slice.buffer.device === device else {
            throw VulkanError.invalidArgument("buffer of \(slice.buffer.device.label) bound on a stream of \(device.label)")
        }
        try slice.buffer.checkRange(offset: slice.offset, bytes: slice.byteCount)
        guard slice.byteCount <= caps.maxStorageBufferRange else {
            throw VulkanError.bindingTooLarge(bytes: slice.byteCount, maxStorageBufferRange: caps.maxStorageBufferRange)
        }
        // An empty slice is bound at offset 0 (see `dispatch`), so its own offset never matters.
        guard slice.byteCount == 0 || slice.offset % caps.minStorageBufferOffsetAlignment == 0 else {
            throw VulkanError.misalignedOffset(offset: slice.offset, alignment: caps.minStorageBufferOffsetAlignment)
        }
    }

    private func commandBuffer() throws -> VkCommandBuffer {
        if let current { return current }
        let cb: VkCommandBuffer
        if let reused = spare.popLast() {
            cb = reused
        } else {
            var info = VkCommandBufferAllocateInfo()
            info.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
            info.commandPool = commandPool
            info.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY
            info.commandBufferCount = 1
            var allocated: VkCommandBuffer?
            try check(vkAllocateCommandBuffers(device.handle, &info, &allocated), "vkAllocateCommandBuffers")
            guard let allocated else { throw VulkanError.call("vkAllocateCommandBuffers", result: -3) }
            cb = allocated
        }
        var begin = VkCommandBufferBeginInfo()
        begin.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
        begin.flags = VkCommandBufferUsageFlags(VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT.rawValue)
        try check(vkBeginCommandBuffer(cb, &begin), "vkBeginCommandBuffer")
        current = cb
        return cb
    }

    private func allocateDescriptorSet(_ layout: VkDescriptorSetLayout) throws -> VkDescriptorSet {
        if setsLeft == 0 {
            poolIndex = descriptorPools.isEmpty ? 0 : poolIndex + 1
            if poolIndex == descriptorPools.count {
                var size = VkDescriptorPoolSize(type: VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, descriptorCount: UInt32(Stream.descriptorsPerPool))
                var info = VkDescriptorPoolCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO
                info.maxSets = UInt32(Stream.setsPerPool)
                info.poolSizeCount = 1
                var pool: VkDescriptorPool?
                try withUnsafePointer(to: &size) { sizePointer in
                    info.pPoolSizes = sizePointer
                    try check(vkCreateDescriptorPool(device.handle, &info, nil, &pool), "vkCreateDescriptorPool")
                }
                guard let pool else { throw VulkanError.call("vkCreateDescriptorPool", result: -3) }
                descriptorPools.append(pool)
            }
            setsLeft = Stream.setsPerPool
        }
        var layoutOptional: VkDescriptorSetLayout? = layout
        var set: VkDescriptorSet?
        let pool = descriptorPools[poolIndex]
        let result = withUnsafePointer(to: &layoutOptional) { layoutPointer in
            var info = VkDescriptorSetAllocateInfo()
            info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO
            info.descriptorPool = pool
            info.descriptorSetCount = 1
            info.pSetLayouts = layoutPointer
            return vkAllocateDescriptorSets(device.handle, &info, &set)
        }
        if (result == VK_ERROR_OUT_OF_POOL_MEMORY || result == VK_ERROR_FRAGMENTED_POOL) && setsLeft < Stream.setsPerPool {
            setsLeft = 0  // descriptors ran out before sets did: move to the next pool
            return try allocateDescriptorSet(layout)
        }
        try check(result, "vkAllocateDescriptorSets")
        guard let set else { throw VulkanError.call("vkAllocateDescriptorSets", result: -3) }
        setsLeft -= 1
        return set
    }

    private func timestampPool() throws -> VkQueryPool {
        if let queryPool { return queryPool }
        var info = VkQueryPoolCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO
        info.queryType = VK_QUERY_TYPE_TIMESTAMP
        info.queryCount = UInt32(Stream.maxTimestamps)
        var pool: VkQueryPool?
        try check(vkCreateQueryPool(device.handle, &info, nil, &pool), "vkCreateQueryPool")
        guard let pool else { throw VulkanError.call("vkCreateQueryPool", result: -3) }
        queryPool = pool
        return pool
    }
}

extension Device {
    /// A new stream on the compute queue (or the transfer queue).
    /// - Parameter queue: The compute queue (the default) or the transfer queue.
    /// - Returns: The stream.
    /// - Throws: `VulkanError.call` when the command pool cannot be made.
    public func makeStream(queue: QueueKind = .compute) throws -> Stream {
        try Stream(device: self, queue: queue)
    }
}
