import CVulkan

/// A timeline semaphore of one device that the host signals and GPU submissions wait on
/// (wait-before-signal is allowed for timeline semaphores): how work that happens off the
/// GPU, such as a copy between devices done by a host task, is ordered before the GPU work
/// that needs it without blocking the thread that submits.
///
/// The value only grows. Whoever signals must signal every value that a submission waits on,
/// also on error paths, or that queue stalls (and the device cannot be destroyed).
///
/// Sendable: the handle never changes; vkSignalSemaphore and vkWaitSemaphores may be called
/// from any thread.
public final class TimelineSemaphore: Sendable {
    /// The device whose submissions wait on the semaphore.
    public let device: Device
    nonisolated(unsafe) let handle: VkSemaphore

    /// - Parameters:
    ///   - device: The device that owns the semaphore.
    ///   - initialValue: The starting value.
    /// - Throws: `VulkanError.call` when the semaphore cannot be made.
    public init(device: Device, initialValue: UInt64 = 0) throws {
        self.device = device
        var typeInfo = VkSemaphoreTypeCreateInfo()
        typeInfo.sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO
        typeInfo.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE
        typeInfo.initialValue = initialValue
        var semaphore: VkSemaphore?
        let result = withUnsafePointer(to: &typeInfo) { typePointer in
            var info = VkSemaphoreCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO
            info.pNext = UnsafeRawPointer(typePointer)
            return vkCreateSemaphore(device.handle, &info, nil, &semaphore)
        }
        try check(result, "vkCreateSemaphore(timeline)")
        guard let semaphore else { throw VulkanError.call("vkCreateSemaphore", result: -3) }
        handle = semaphore
        device.track("timeline semaphore", 1)
    }

    deinit {
        device.track("timeline semaphore", -1)
        vkDestroySemaphore(device.handle, handle, nil)
    }

    /// The current value.
    public var value: UInt64 {
        var current: UInt64 = 0
        _ = vkGetSemaphoreCounterValue(device.handle, handle, &current)
        return current
    }

    /// Sets the value to `value` from the host (must be greater than the current value).
    /// - Parameter value: The new value.
    /// - Throws: `VulkanError.call` when the signal fails (the layer also reports a value that
    ///   does not grow).
    public func signal(_ value: UInt64) throws {
        var info = VkSemaphoreSignalInfo()
        info.sType = VK_STRUCTURE_TYPE_SEMAPHORE_SIGNAL_INFO
        info.semaphore = handle
        info.value = value
        try check(vkSignalSemaphore(device.handle, &info), "vkSignalSemaphore(\(value))")
    }

    /// Blocks until the value reaches `value`.
    /// - Parameters:
    ///   - value: The value to wait for.
    ///   - timeoutNanoseconds: How long to wait at most (`.max`: no limit).
    /// - Throws: `VulkanError.timeout` when the time passed first, `VulkanError.call` when the
    ///   wait fails.
    public func wait(for value: UInt64, timeoutNanoseconds: UInt64 = .max) throws {
        var semaphore: VkSemaphore? = handle
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
        if result == VK_TIMEOUT { throw VulkanError.timeout("timeline semaphore value \(value) on \(device.label)") }
        try check(result, "vkWaitSemaphores")
    }
}

extension Stream {
    /// Makes the next submission of this stream wait (on the GPU) until `semaphore` reaches
    /// `value`. The semaphore must outlive that submission.
    /// - Parameters:
    ///   - semaphore: A semaphore of this stream's device, which a host task will signal.
    ///   - value: The value the submission waits for.
    /// - Throws: `VulkanError.invalidArgument` for a semaphore of another device.
    public func wait(for semaphore: TimelineSemaphore, value: UInt64) throws {
        guard semaphore.device === device else {
            throw VulkanError.invalidArgument("a stream of \(device.label) cannot wait on a semaphore of \(semaphore.device.label)")
        }
        waits.append((semaphore.handle, value))
        retained.append(semaphore)  // the submission waits on its handle: keep it alive until then
    }

    /// Raw ticks of a timestamp of the last synchronized batch (multiply by the device's
    /// `timestampPeriodNanoseconds`; `GPUClock` maps them to the host clock).
    /// - Parameter timestamp: A timestamp of the last synchronized batch.
    /// - Returns: The raw GPU ticks.
    /// - Throws: `VulkanError.invalidArgument` for a timestamp of another batch, or one not yet
    ///   synchronized.
    public func ticks(of timestamp: Timestamp) throws -> UInt64 {
        guard timestamp.generation == resultsGeneration, timestamp.index < timestampTicks.count else {
            throw VulkanError.invalidArgument("timestamps are read after synchronize(), once, for the batch that recorded them")
        }
        return timestampTicks[timestamp.index]
    }
}
