import CVulkan
import Synchronization

/// Optional features VkAttn turned on for a logical device (each only where offered).
public struct EnabledFeatures: Sendable, Codable, Equatable {
    /// 16-bit float arithmetic in shaders.
    public var shaderFloat16 = false
    /// 8-bit integer arithmetic in shaders.
    public var shaderInt8 = false
    /// 16-bit integer arithmetic in shaders.
    public var shaderInt16 = false
    /// 64-bit integer arithmetic in shaders.
    public var shaderInt64 = false
    /// 64-bit float arithmetic in shaders.
    public var shaderFloat64 = false
    /// 16-bit loads and stores in storage buffers (f16 and bf16 tensors).
    public var storageBuffer16BitAccess = false
    /// 8-bit loads and stores in storage buffers.
    public var storageBuffer8BitAccess = false
    /// Pinning a pipeline's subgroup size (Vulkan 1.3 subgroupSizeControl).
    public var subgroupSizeControl = false
    /// Requiring full subgroups in compute pipelines.
    public var computeFullSubgroups = false
    /// The Vulkan memory model (the cooperative-matrix kernels and the look-back scans use it).
    public var vulkanMemoryModel = false
    /// Device-scope memory model operations (plain GLSL atomics need it once the memory
    /// model is on).
    public var vulkanMemoryModelDeviceScope = false
    /// Subgroup operations on 8-, 16- and 64-bit types.
    public var shaderSubgroupExtendedTypes = false
    /// VK_KHR_cooperative_matrix (tensor cores through the Khronos extension).
    public var cooperativeMatrixKHR = false
    /// VK_NV_cooperative_matrix (NVIDIA's older extension; one opt-in BSR SpMM kernel uses it).
    public var cooperativeMatrixNV = false
    /// VK_KHR_shader_bfloat16 with bf16 cooperative matrices (enabled only with both features).
    public var shaderBFloat16CooperativeMatrix = false
    /// VK_EXT_memory_budget (per-heap budgets in ``Device/memoryHeaps()``).
    public var memoryBudget = false
    /// VK_EXT_calibrated_timestamps (GPU timestamps mapped to a host clock).
    public var calibratedTimestamps = false
    /// VK_EXT_external_memory_host (buffers over imported host allocations).
    public var externalMemoryHost = false
}

/// A logical device: a compute queue, a dedicated transfer queue where the device has one, and
/// the kernel cache. Several `Device`s may be created on one physical device; each is
/// independent (own queues, own memory, own pipelines).
///
/// Sendable: handles are immutable after init; the queues serialize their own submissions;
/// the kernel cache is behind a lock; Vulkan allows the other device-level calls made here
/// (allocation, object creation) from several threads at once.
public final class Device: Sendable {
    /// The physical device this logical device runs on.
    public let physicalDevice: PhysicalDevice
    /// A name for messages: `<device name>#<index>`.
    public let label: String
    /// The optional features turned on for this device.
    public let enabled: EnabledFeatures
    /// Immutable after init; destroyed in `deinit` once every object that uses it is gone
    /// (buffers, kernels and streams hold a strong reference to this Device).
    nonisolated(unsafe) let handle: VkDevice
    let computeQueue: Queue
    let transferQueue: Queue
    /// Memory types: property flags and heap index, read once.
    let memoryTypes: [(flags: UInt32, heap: Int)]
    let pipelines = Mutex<[KernelDescriptor: PipelineObject]>([:])
    /// Objects of this device still alive, by kind (buffers, streams, semaphores).
    let live = Mutex<[String: Int]>([:])
    /// vkGetMemoryHostPointerPropertiesEXT where VK_EXT_external_memory_host is enabled.
    let hostPointerProperties: PFN_vkGetMemoryHostPointerPropertiesEXT?

    /// The instance that owns the physical device.
    public var instance: Instance { physicalDevice.instance }
    /// The physical device's capability report.
    public var capabilities: DeviceCapabilities { physicalDevice.capabilities }
    /// True when copies on `.transfer` streams run on a DMA queue of their own.
    public var hasDedicatedTransferQueue: Bool { transferQueue !== computeQueue }

    /// Creates a logical device on `physicalDevice` (by default the instance's selected device).
    /// Enables every optional feature the device offers that the kernels can use (``enabled``
    /// says which), one compute queue and, where a DMA-only queue family exists, a transfer queue.
    /// - Parameter physicalDevice: The device to open, e.g. from ``Instance/selectDevice(_:)``.
    /// - Throws: ``VulkanError/unsupportedDevice(device:reason:)`` when the device lacks Vulkan 1.2,
    ///   timeline semaphores or a compute queue; ``VulkanError/call(_:result:)`` when device or
    ///   queue creation fails.
    public init(physicalDevice: PhysicalDevice) throws {
        let caps = physicalDevice.capabilities
        if let reason = caps.unsupportedReason {
            throw VulkanError.unsupportedDevice(device: caps.name, reason: reason)
        }
        self.physicalDevice = physicalDevice
        self.label = "\(caps.name)#\(caps.index)"
        let pd = physicalDevice.handle

        guard let computeFamily = caps.queueFamilies.first(where: { $0.compute && $0.timestampValidBits > 0 })
            ?? caps.queueFamilies.first(where: { $0.compute }) else {
            throw VulkanError.unsupportedDevice(device: caps.name, reason: "has no compute queue")
        }
        let transferFamily = caps.queueFamilies.first(where: { $0.isTransferOnly && $0.timestampValidBits > 0 })
            ?? caps.queueFamilies.first(where: { $0.isTransferOnly })

        // Features: everything useful that the device offers.
        var enabled = EnabledFeatures()
        let chain = PNextChain()
        var f2 = VkPhysicalDeviceFeatures2()
        f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2
        f2.features.shaderInt16 = VkBool32(caps.shaderInt16 ? 1 : 0)
        f2.features.shaderInt64 = VkBool32(caps.shaderInt64 ? 1 : 0)
        f2.features.shaderFloat64 = VkBool32(caps.shaderFloat64 ? 1 : 0)
        enabled.shaderInt16 = caps.shaderInt16
        enabled.shaderInt64 = caps.shaderInt64
        enabled.shaderFloat64 = caps.shaderFloat64
        let head = chain.append(f2)
        var f11 = VkPhysicalDeviceVulkan11Features()
        f11.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES
        f11.storageBuffer16BitAccess = VkBool32(caps.storageBuffer16BitAccess ? 1 : 0)
        enabled.storageBuffer16BitAccess = caps.storageBuffer16BitAccess
        chain.append(f11)
        var f12 = VkPhysicalDeviceVulkan12Features()
        f12.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES
        f12.timelineSemaphore = VkBool32(1)
        f12.shaderFloat16 = VkBool32(caps.shaderFloat16 ? 1 : 0)
        f12.shaderInt8 = VkBool32(caps.shaderInt8 ? 1 : 0)
        f12.storageBuffer8BitAccess = VkBool32(caps.storageBuffer8BitAccess ? 1 : 0)
        f12.vulkanMemoryModel = VkBool32(caps.vulkanMemoryModel ? 1 : 0)
        f12.vulkanMemoryModelDeviceScope = VkBool32(caps.vulkanMemoryModelDeviceScope ? 1 : 0)
        f12.shaderSubgroupExtendedTypes = VkBool32(caps.shaderSubgroupExtendedTypes ? 1 : 0)
        enabled.shaderFloat16 = caps.shaderFloat16
        enabled.shaderInt8 = caps.shaderInt8
        enabled.storageBuffer8BitAccess = caps.storageBuffer8BitAccess
        enabled.vulkanMemoryModel = caps.vulkanMemoryModel
        enabled.vulkanMemoryModelDeviceScope = caps.vulkanMemoryModelDeviceScope
        enabled.shaderSubgroupExtendedTypes = caps.shaderSubgroupExtendedTypes
        chain.append(f12)
        if caps.apiVersionNumber >= vkattn_make_api_version(0, 1, 3, 0) {
            var f13 = VkPhysicalDeviceVulkan13Features()
            f13.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES
            f13.subgroupSizeControl = VkBool32(caps.subgroupSizeControl ? 1 : 0)
            f13.computeFullSubgroups = VkBool32(caps.computeFullSubgroups ? 1 : 0)
            enabled.subgroupSizeControl = caps.subgroupSizeControl
            enabled.computeFullSubgroups = caps.computeFullSubgroups
            chain.append(f13)
        }
        var extensions: [String] = []
        if !caps.cooperativeMatrixKHR.isEmpty {
            var f = VkPhysicalDeviceCooperativeMatrixFeaturesKHR()
            f.sType = VkStructureType(rawValue: VKATTN_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR)
            f.cooperativeMatrix = VkBool32(1)
            chain.append(f)
            extensions.append("VK_KHR_cooperative_matrix")
            enabled.cooperativeMatrixKHR = true
        }
        if enabled.cooperativeMatrixKHR && caps.shaderBFloat16Type && caps.shaderBFloat16CooperativeMatrix {
            var f = VkattnPhysicalDeviceShaderBfloat16Features()
            f.sType = VkStructureType(rawValue: VKATTN_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_BFLOAT16_FEATURES_KHR)
            f.shaderBFloat16Type = VkBool32(1)
            f.shaderBFloat16CooperativeMatrix = VkBool32(1)
            chain.append(f)
            extensions.append("VK_KHR_shader_bfloat16")
            enabled.shaderBFloat16CooperativeMatrix = true
        }
        if !caps.cooperativeMatrixNV.isEmpty {
            var f = VkPhysicalDeviceCooperativeMatrixFeaturesNV()
            f.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV
            f.cooperativeMatrix = VkBool32(1)
            chain.append(f)
            extensions.append("VK_NV_cooperative_matrix")
            enabled.cooperativeMatrixNV = true
        }
        if caps.extensions.contains("VK_EXT_memory_budget") {
            extensions.append("VK_EXT_memory_budget")
            enabled.memoryBudget = true
        }
        if caps.extensions.contains("VK_EXT_calibrated_timestamps") {
            extensions.append("VK_EXT_calibrated_timestamps")
            enabled.calibratedTimestamps = true
        }
        if caps.extensions.contains("VK_EXT_external_memory_host") {
            extensions.append("VK_EXT_external_memory_host")
            enabled.externalMemoryHost = true
        }
        self.enabled = enabled

        // Queues: one compute queue, plus one transfer queue from a DMA-only family.
        var priority: Float = 1
        var queueInfos: [VkDeviceQueueCreateInfo] = []
        for family in [computeFamily.index] + (transferFamily.map { [$0.index] } ?? []) {
            var q = VkDeviceQueueCreateInfo()
            q.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
            q.queueFamilyIndex = UInt32(family)
            q.queueCount = 1
            queueInfos.append(q)
        }

        var device: VkDevice?
        let result = withUnsafePointer(to: &priority) { priorityPointer in
            for i in queueInfos.indices { queueInfos[i].pQueuePriorities = priorityPointer }
            return queueInfos.withUnsafeBufferPointer { queues in
                withCStringArray(extensions) { extensionNames in
                    var info = VkDeviceCreateInfo()
                    info.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
                    info.pNext = UnsafeRawPointer(head)
                    info.queueCreateInfoCount = UInt32(queues.count)
                    info.pQueueCreateInfos = queues.baseAddress
                    info.enabledExtensionCount = UInt32(extensions.count)
                    info.ppEnabledExtensionNames = extensionNames
                    return vkCreateDevice(pd, &info, nil, &device)
                }
            }
        }
        try check(result, "vkCreateDevice")
        guard let device else { throw VulkanError.call("vkCreateDevice", result: -3) }

        func makeQueue(_ family: Int, _ kind: QueueKind) throws -> Queue {
            var queue: VkQueue?
            vkGetDeviceQueue(device, UInt32(family), 0, &queue)
            var typeInfo = VkSemaphoreTypeCreateInfo()
            typeInfo.sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO
            typeInfo.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE
            typeInfo.initialValue = 0
            var semaphore: VkSemaphore?
            let r = withUnsafePointer(to: &typeInfo) { typePointer in
                var info = VkSemaphoreCreateInfo()
                info.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO
                info.pNext = UnsafeRawPointer(typePointer)
                return vkCreateSemaphore(device, &info, nil, &semaphore)
            }
            try check(r, "vkCreateSemaphore")
            guard let queue, let semaphore else { throw VulkanError.call("vkGetDeviceQueue", result: -3) }
            return Queue(handle: queue, timeline: semaphore, family: family, kind: kind)
        }
        let compute: Queue
        let transfer: Queue
        do {
            compute = try makeQueue(computeFamily.index, .compute)
            do {
                transfer = try transferFamily.map { try makeQueue($0.index, .transfer) } ?? compute
            } catch {
                vkDestroySemaphore(device, compute.timeline, nil)
                throw error
            }
        } catch {
            vkDestroyDevice(device, nil)
            throw error
        }
        self.handle = device
        self.computeQueue = compute
        self.transferQueue = transfer
        self.hostPointerProperties = enabled.externalMemoryHost ? vkattn_load_host_pointer_properties(device) : nil

        var memory = VkPhysicalDeviceMemoryProperties()
        vkGetPhysicalDeviceMemoryProperties(pd, &memory)
        let types = tupleArray(memory.memoryTypes, as: VkMemoryType.self)
        self.memoryTypes = (0..<Int(memory.memoryTypeCount)).map { (types[$0].propertyFlags, Int(types[$0].heapIndex)) }
    }

    /// Creates a logical device on the selected physical device of a new instance
    /// (`VKATTN_DEVICE` picks it; validation per `VKATTN_VALIDATION`).
    /// - Parameters:
    ///   - selector: A device index or a case-insensitive substring of its name; nil reads
    ///     `VKATTN_DEVICE`, and without that the default preference order picks.
    ///   - validation: Which validation to enable on the new instance.
    ///   - log: Where the instance's validation messages are collected.
    /// - Throws: The errors of ``Instance/init(validation:log:)``,
    ///   ``Instance/selectDevice(_:)`` and ``init(physicalDevice:)``.
    public convenience init(selector: String? = nil, validation: ValidationOptions = .fromEnvironment(), log: ValidationLog = ValidationLog()) throws {
        let instance = try Instance(validation: validation, log: log)
        try self.init(physicalDevice: instance.selectDevice(selector))
    }

    deinit {
        _ = vkDeviceWaitIdle(handle)
        pipelines.withLock { cache in
            for object in cache.values { object.destroy(device: handle) }
            cache.removeAll()
        }
        if transferQueue !== computeQueue { vkDestroySemaphore(handle, transferQueue.timeline, nil) }
        vkDestroySemaphore(handle, computeQueue.timeline, nil)
        vkDestroyDevice(handle, nil)
    }

    func queue(_ kind: QueueKind) -> Queue {
        kind == .compute ? computeQueue : transferQueue
    }

    /// Waits until every submission to every queue of this device has finished.
    public func waitIdle() {
        computeQueue.waitIdle()
        if hasDedicatedTransferQueue { transferQueue.waitIdle() }
    }

    /// Heap budgets as of now (VK_EXT_memory_budget), or the static heap sizes without it.
    /// - Returns: One entry per heap, in the device's heap order.
    public func memoryHeaps() -> [MemoryHeap] {
        DeviceCapabilities(instance: instance.handle, physicalDevice: physicalDevice.handle, index: physicalDevice.index).memoryHeaps
    }
}

extension Device {
    /// The Vulkan objects made on this device that are still alive, by kind ("buffer",
    /// "stream", "timeline semaphore"). Each keeps the device alive: a device that outlives the
    /// code that made it was leaked by one of these (tests and the bench report it).
    public var liveObjects: [String: Int] { live.withLock { $0.filter { $0.value != 0 } } }

    func track(_ kind: String, _ delta: Int) {
        live.withLock { $0[kind, default: 0] += delta }
    }
}
