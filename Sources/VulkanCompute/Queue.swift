import CVulkan
import Synchronization

/// Which queue of a device a stream submits to.
public enum QueueKind: String, Sendable, Codable {
    /// The compute queue (dispatches and copies).
    case compute
    /// A dedicated transfer (DMA) queue where the device has one; copies only. Devices
    /// without one fall back to the compute queue, and `Device.hasDedicatedTransferQueue` says so.
    case transfer
}

/// One VkQueue with the timeline semaphore its submissions signal.
///
/// Sendable: the handles never change after init. VkQueue is externally synchronized in
/// Vulkan, so every vkQueueSubmit and vkQueueWaitIdle happens inside `lastValue`'s lock; the
/// semaphore is only signaled by those submissions, in increasing order.
final class Queue: Sendable {
    nonisolated(unsafe) let handle: VkQueue
    nonisolated(unsafe) let timeline: VkSemaphore
    let family: Int
    let kind: QueueKind
    private let lastValue = Mutex<UInt64>(0)

    init(handle: VkQueue, timeline: VkSemaphore, family: Int, kind: QueueKind) {
        self.handle = handle
        self.timeline = timeline
        self.family = family
        self.kind = kind
    }

    /// Submits one command buffer that waits on `waits` (timeline values of other queues) and
    /// signals this queue's timeline with the returned value.
    func submit(_ commandBuffer: VkCommandBuffer, waits: [(semaphore: VkSemaphore, value: UInt64)]) throws -> UInt64 {
        try lastValue.withLock { last in
            let value = last + 1
            var waitSemaphores: [VkSemaphore?] = waits.map { $0.semaphore }
            var waitValues: [UInt64] = waits.map { $0.value }
            var waitStages = [VkPipelineStageFlags](repeating: VkPipelineStageFlags(VK_PIPELINE_STAGE_ALL_COMMANDS_BIT.rawValue), count: waits.count)
            var signalSemaphore: VkSemaphore? = timeline
            var signalValue = value
            var commandBufferOptional: VkCommandBuffer? = commandBuffer
            let result = waitSemaphores.withUnsafeMutableBufferPointer { ws in
                waitValues.withUnsafeMutableBufferPointer { wv in
                    waitStages.withUnsafeMutableBufferPointer { stages in
                        withUnsafePointer(to: &signalSemaphore) { ss in
                            withUnsafePointer(to: &signalValue) { sv in
                                withUnsafePointer(to: &commandBufferOptional) { cb in
                                    var timelineInfo = VkTimelineSemaphoreSubmitInfo()
                                    timelineInfo.sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO
                                    timelineInfo.waitSemaphoreValueCount = UInt32(waits.count)
                                    timelineInfo.pWaitSemaphoreValues = UnsafePointer(wv.baseAddress)
                                    timelineInfo.signalSemaphoreValueCount = 1
                                    timelineInfo.pSignalSemaphoreValues = sv
                                    return withUnsafePointer(to: &timelineInfo) { ti in
                                        var info = VkSubmitInfo()
                                        info.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO
                                        info.pNext = UnsafeRawPointer(ti)
                                        info.waitSemaphoreCount = UInt32(waits.count)
                                        info.pWaitSemaphores = UnsafePointer(ws.baseAddress)
                                        info.pWaitDstStageMask = UnsafePointer(stages.baseAddress)
                                        info.commandBufferCount = 1
                                        info.pCommandBuffers = cb
                                        info.signalSemaphoreCount = 1
                                        info.pSignalSemaphores = ss
                                        return vkQueueSubmit(handle, 1, &info, nil)
                                    }
                                }
                            }
                        }
                    }
                }
            }
            try check(result, "vkQueueSubmit")
            last = value
            return value
        }
    }

    func waitIdle() {
        lastValue.withLock { _ in _ = vkQueueWaitIdle(handle) }
    }
}
