import CVulkan

/// The kind of a physical device, in the order the default device selection prefers them.
public enum DeviceType: String, Sendable, Codable, CaseIterable {
    /// A GPU with memory of its own (preferred first).
    case discreteGPU = "discrete-gpu"
    /// A GPU sharing the host's memory.
    case integratedGPU = "integrated-gpu"
    /// A GPU of a virtual machine.
    case virtualGPU = "virtual-gpu"
    /// A CPU implementation such as Mesa's lavapipe.
    case cpu
    /// Anything else the driver reports.
    case other

    init(_ type: VkPhysicalDeviceType) {
        switch type {
        case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: self = .discreteGPU
        case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: self = .integratedGPU
        case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: self = .virtualGPU
        case VK_PHYSICAL_DEVICE_TYPE_CPU: self = .cpu
        default: self = .other
        }
    }

    /// Lower is preferred by the default selection.
    var preference: Int { DeviceType.allCases.firstIndex(of: self) ?? 4 }
}

/// One memory heap, with the VK_EXT_memory_budget figures where the device reports them.
public struct MemoryHeap: Sendable, Codable, Equatable {
    /// The heap's index in the device's memory properties.
    public var index: Int
    /// The heap's size in bytes.
    public var bytes: Int
    /// Whether the heap is device-local (VRAM on a discrete GPU).
    public var deviceLocal: Bool
    /// Bytes this process may still allocate from the heap (VK_EXT_memory_budget), if known.
    public var budgetBytes: Int?
    /// Bytes this process has allocated from the heap (VK_EXT_memory_budget), if known.
    public var usageBytes: Int?
}

/// One queue family and what it can do.
public struct QueueFamily: Sendable, Codable, Equatable {
    /// The queue family's index.
    public var index: Int
    /// How many queues the family offers.
    public var count: Int
    /// Whether the family's queues draw.
    public var graphics: Bool
    /// Whether the family's queues run compute work.
    public var compute: Bool
    /// Whether the family's queues copy.
    public var transfer: Bool
    /// Valid bits of the family's timestamps; 0 means the family cannot time work.
    public var timestampValidBits: Int
    /// A family that copies but neither computes nor draws (a DMA engine).
    public var isTransferOnly: Bool { transfer && !compute && !graphics }
}

/// A matrix-multiply-accumulate shape a cooperative-matrix extension offers:
/// D (M x N, resultType) = A (M x K, aType) * B (K x N, bType) + C (M x N, cType).
public struct CooperativeMatrixShape: Sendable, Codable, Hashable {
    /// Rows of A, C and D.
    public var m: Int
    /// Columns of B, C and D.
    public var n: Int
    /// Columns of A and rows of B.
    public var k: Int
    /// A's component type, e.g. `f16`.
    public var aType: String
    /// B's component type.
    public var bType: String
    /// C's (the accumulator's) component type.
    public var cType: String
    /// D's component type.
    public var resultType: String
    /// The scope the matrices live in (`subgroup` for every shape the kernels use).
    public var scope: String
    /// Whether integer accumulation saturates.
    public var saturatingAccumulation: Bool
}

/// Everything the library (and a user choosing a device) needs to know about a physical device.
public struct DeviceCapabilities: Sendable, Codable, Equatable {
    /// The device's index in the instance's enumeration order.
    public var index: Int
    /// The device's name as the driver reports it.
    public var name: String
    /// The PCI vendor ID.
    public var vendorID: Int
    /// The vendor's name (from the vendor ID where known).
    public var vendor: String
    /// The vendor's device ID.
    public var deviceID: Int
    /// The kind of device, which the default selection ranks.
    public var type: DeviceType
    /// The Vulkan version the device supports, as `major.minor.patch`.
    public var apiVersion: String
    /// The driver's name (VkPhysicalDeviceDriverProperties).
    public var driverName: String
    /// The driver's free-form version information.
    public var driverInfo: String
    /// The driver's version number, encoded as the vendor chooses.
    public var driverVersion: Int

    /// The default subgroup size of compute pipelines.
    public var subgroupSize: Int
    /// The smallest subgroup size a pipeline can pin (subgroupSizeControl).
    public var minSubgroupSize: Int
    /// The largest subgroup size a pipeline can pin.
    public var maxSubgroupSize: Int
    /// The subgroup operation classes the device offers (`basic`, `arithmetic`, `shuffle`, ...).
    public var subgroupOperations: [String]
    /// Whether subgroup operations work in compute shaders.
    public var subgroupInCompute: Bool
    /// Streaming multiprocessors / compute units, where an extension reports them.
    public var computeUnits: Int?

    /// Shared memory one workgroup may declare, in bytes (the attention tiles are sized from it).
    public var maxComputeSharedMemoryBytes: Int
    /// The largest workgroup size in x, y, z.
    public var maxWorkgroupSize: [Int]
    /// The most invocations one workgroup may have.
    public var maxWorkgroupInvocations: Int
    /// The most workgroups one dispatch may have in x, y, z.
    public var maxWorkgroupCount: [Int]
    /// The largest storage-buffer binding, in bytes (128 MiB on lavapipe).
    public var maxStorageBufferRange: Int
    /// The largest single memory allocation, in bytes.
    public var maxMemoryAllocationBytes: Int
    /// The largest buffer, in bytes, where the device reports it (Vulkan 1.3).
    public var maxBufferBytes: Int?
    /// The push-constant space of a pipeline, in bytes.
    public var maxPushConstantsBytes: Int
    /// The most storage buffers one shader stage may bind.
    public var maxPerStageStorageBuffers: Int
    /// The alignment every storage-buffer binding offset must have, in bytes.
    public var minStorageBufferOffsetAlignment: Int
    /// The memory heaps when the report was made.
    public var memoryHeaps: [MemoryHeap]

    /// 16-bit float arithmetic in shaders.
    public var shaderFloat16: Bool
    /// 64-bit float arithmetic in shaders.
    public var shaderFloat64: Bool
    /// 8-bit integer arithmetic in shaders.
    public var shaderInt8: Bool
    /// 16-bit integer arithmetic in shaders.
    public var shaderInt16: Bool
    /// 64-bit integer arithmetic in shaders.
    public var shaderInt64: Bool
    /// 16-bit loads and stores in storage buffers.
    public var storageBuffer16BitAccess: Bool
    /// 8-bit loads and stores in storage buffers.
    public var storageBuffer8BitAccess: Bool
    /// Timeline semaphores (required).
    public var timelineSemaphore: Bool
    /// Pinning a pipeline's subgroup size.
    public var subgroupSizeControl: Bool
    /// Requiring full subgroups in compute pipelines.
    public var computeFullSubgroups: Bool
    /// The Vulkan memory model.
    public var vulkanMemoryModel: Bool
    /// Device-scope operations of the Vulkan memory model.
    public var vulkanMemoryModelDeviceScope: Bool
    /// Subgroup operations on 8-, 16- and 64-bit types.
    public var shaderSubgroupExtendedTypes: Bool
    /// VK_KHR_shader_bfloat16: bfloat16 as a shader type, and in cooperative matrices.
    public var shaderBFloat16Type: Bool
    /// VK_KHR_shader_bfloat16's bf16 cooperative matrices.
    public var shaderBFloat16CooperativeMatrix: Bool
    /// The shapes VK_KHR_cooperative_matrix offers; empty without the extension.
    public var cooperativeMatrixKHR: [CooperativeMatrixShape]
    /// The shapes VK_NV_cooperative_matrix offers; empty without the extension.
    public var cooperativeMatrixNV: [CooperativeMatrixShape]

    /// Loop iterations one invocation may run in total, across all its loops, where the driver
    /// caps them (llvmpipe/lavapipe: 65535; past it, loops silently exit early): kernels whose
    /// per-invocation work grows with the problem must split it below this. nil: no cap.
    public var loopIterationLimit: Int?

    /// VK_EXT_external_memory_host: the alignment (bytes) of a host pointer and size the device
    /// imports; nil when the extension is not offered.
    public var minImportedHostPointerAlignment: Int?
    /// Whether the device imports host allocations (VK_EXT_external_memory_host).
    public var externalMemoryHost: Bool { minImportedHostPointerAlignment != nil }

    /// Nanoseconds per timestamp tick.
    public var timestampPeriodNanoseconds: Double
    /// Whether every compute and graphics queue supports timestamps.
    public var timestampComputeAndGraphics: Bool
    /// The queue families, by index.
    public var queueFamilies: [QueueFamily]
    /// The device extensions offered.
    public var extensions: [String]

    /// Whether VkAttn can run on the device (Vulkan 1.2 with timeline semaphores and timestamps).
    public var unsupportedReason: String? {
        if apiVersionNumber < vkattn_make_api_version(0, 1, 2, 0) { return "needs Vulkan 1.2, device has \(apiVersion)" }
        if !timelineSemaphore { return "needs timeline semaphores" }
        if !queueFamilies.contains(where: { $0.compute }) { return "has no compute queue" }
        return nil
    }

    var apiVersionNumber: UInt32 = 0

    private enum CodingKeys: String, CodingKey {
        case index, name, vendorID, vendor, deviceID, type, apiVersion, driverName, driverInfo, driverVersion
        case subgroupSize, minSubgroupSize, maxSubgroupSize, subgroupOperations, subgroupInCompute, computeUnits
        case maxComputeSharedMemoryBytes, maxWorkgroupSize, maxWorkgroupInvocations, maxWorkgroupCount
        case maxStorageBufferRange, maxMemoryAllocationBytes, maxBufferBytes, maxPushConstantsBytes
        case maxPerStageStorageBuffers, minStorageBufferOffsetAlignment, memoryHeaps
        case shaderFloat16, shaderFloat64, shaderInt8, shaderInt16, shaderInt64
        case storageBuffer16BitAccess, storageBuffer8BitAccess, timelineSemaphore, subgroupSizeControl
        case computeFullSubgroups, vulkanMemoryModel, vulkanMemoryModelDeviceScope, shaderSubgroupExtendedTypes
        case shaderBFloat16Type, shaderBFloat16CooperativeMatrix, cooperativeMatrixKHR, cooperativeMatrixNV
        case loopIterationLimit, minImportedHostPointerAlignment, timestampPeriodNanoseconds, timestampComputeAndGraphics, queueFamilies, extensions
    }
}

extension DeviceCapabilities {
    /// Queries the device (properties2 / features2 chains, memory budget, cooperative matrix).
    init(instance: VkInstance, physicalDevice pd: VkPhysicalDevice, index: Int) {
        let extensions = deviceExtensions(pd)
        let has = { (name: String) in extensions.contains(name) }

        var base = VkPhysicalDeviceProperties()
        vkGetPhysicalDeviceProperties(pd, &base)
        let is13 = base.apiVersion >= vkattn_make_api_version(0, 1, 3, 0)

        // Properties.
        let props = PNextChain()
        var p2 = VkPhysicalDeviceProperties2()
        p2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2
        let head = props.append(p2)
        var v11p = VkPhysicalDeviceVulkan11Properties()
        v11p.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_PROPERTIES
        let p11 = props.append(v11p)
        var v12p = VkPhysicalDeviceVulkan12Properties()
        v12p.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_PROPERTIES
        let p12 = props.append(v12p)
        var p13: UnsafeMutablePointer<VkPhysicalDeviceVulkan13Properties>? = nil
        if is13 {
            var v = VkPhysicalDeviceVulkan13Properties()
            v.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_PROPERTIES
            p13 = props.append(v)
        }
        var sm: UnsafeMutablePointer<VkPhysicalDeviceShaderSMBuiltinsPropertiesNV>? = nil
        if has("VK_NV_shader_sm_builtins") {
            var v = VkPhysicalDeviceShaderSMBuiltinsPropertiesNV()
            v.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV
            sm = props.append(v)
        }
        var amd: UnsafeMutablePointer<VkPhysicalDeviceShaderCorePropertiesAMD>? = nil
        if has("VK_AMD_shader_core_properties") {
            var v = VkPhysicalDeviceShaderCorePropertiesAMD()
            v.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_CORE_PROPERTIES_AMD
            amd = props.append(v)
        }
        var hostImport: UnsafeMutablePointer<VkPhysicalDeviceExternalMemoryHostPropertiesEXT>? = nil
        if has("VK_EXT_external_memory_host") {
            var v = VkPhysicalDeviceExternalMemoryHostPropertiesEXT()
            v.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT
            hostImport = props.append(v)
        }
        head.withMemoryRebound(to: VkPhysicalDeviceProperties2.self, capacity: 1) { vkGetPhysicalDeviceProperties2(pd, $0) }
        let limits = head.pointee.properties.limits

        // Features.
        let feats = PNextChain()
        var f2 = VkPhysicalDeviceFeatures2()
        f2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2
        let fhead = feats.append(f2)
        var v11f = VkPhysicalDeviceVulkan11Features()
        v11f.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES
        let f11 = feats.append(v11f)
        var v12f = VkPhysicalDeviceVulkan12Features()
        v12f.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES
        let f12 = feats.append(v12f)
        var f13: UnsafeMutablePointer<VkPhysicalDeviceVulkan13Features>? = nil
        if is13 {
            var v = VkPhysicalDeviceVulkan13Features()
            v.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES
            f13 = feats.append(v)
        }
        var fKHR: UnsafeMutablePointer<VkPhysicalDeviceCooperativeMatrixFeaturesKHR>? = nil
        if has("VK_KHR_cooperative_matrix") {
            var v = VkPhysicalDeviceCooperativeMatrixFeaturesKHR()
            v.sType = VkStructureType(rawValue: VKATTN_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_KHR)
            fKHR = feats.append(v)
        }
        var fBF16: UnsafeMutablePointer<VkattnPhysicalDeviceShaderBfloat16Features>? = nil
        if has("VK_KHR_shader_bfloat16") {
            var v = VkattnPhysicalDeviceShaderBfloat16Features()
            v.sType = VkStructureType(rawValue: VKATTN_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_BFLOAT16_FEATURES_KHR)
            fBF16 = feats.append(v)
        }
        var fNV: UnsafeMutablePointer<VkPhysicalDeviceCooperativeMatrixFeaturesNV>? = nil
        if has("VK_NV_cooperative_matrix") {
            var v = VkPhysicalDeviceCooperativeMatrixFeaturesNV()
            v.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV
            fNV = feats.append(v)
        }
        vkGetPhysicalDeviceFeatures2(pd, fhead)
        let core = fhead.pointee.features

        // Memory, with budgets where VK_EXT_memory_budget exists.
        let mem = PNextChain()
        var m2 = VkPhysicalDeviceMemoryProperties2()
        m2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2
        let mhead = mem.append(m2)
        var budget: UnsafeMutablePointer<VkPhysicalDeviceMemoryBudgetPropertiesEXT>? = nil
        if has("VK_EXT_memory_budget") {
            var v = VkPhysicalDeviceMemoryBudgetPropertiesEXT()
            v.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT
            budget = mem.append(v)
        }
        vkGetPhysicalDeviceMemoryProperties2(pd, mhead)
        let memory = mhead.pointee.memoryProperties
        let heapSizes = tupleArray(memory.memoryHeaps, as: VkMemoryHeap.self)
        let budgets = budget.map { tupleArray($0.pointee.heapBudget, as: VkDeviceSize.self) }
        let usages = budget.map { tupleArray($0.pointee.heapUsage, as: VkDeviceSize.self) }
        var heaps: [MemoryHeap] = []
        for i in 0..<Int(memory.memoryHeapCount) {
            heaps.append(MemoryHeap(
                index: i, bytes: Int(heapSizes[i].size),
                deviceLocal: heapSizes[i].flags & VkMemoryHeapFlags(VK_MEMORY_HEAP_DEVICE_LOCAL_BIT.rawValue) != 0,
                budgetBytes: budgets.map { Int($0[i]) }, usageBytes: usages.map { Int($0[i]) }))
        }

        // Queue families.
        var familyCount: UInt32 = 0
        vkGetPhysicalDeviceQueueFamilyProperties(pd, &familyCount, nil)
        var families = [VkQueueFamilyProperties](repeating: VkQueueFamilyProperties(), count: Int(familyCount))
        vkGetPhysicalDeviceQueueFamilyProperties(pd, &familyCount, &families)
        let queueFamilies = families.prefix(Int(familyCount)).enumerated().map { i, f in
            QueueFamily(
                index: i, count: Int(f.queueCount),
                graphics: f.queueFlags & VkQueueFlags(VK_QUEUE_GRAPHICS_BIT.rawValue) != 0,
                compute: f.queueFlags & VkQueueFlags(VK_QUEUE_COMPUTE_BIT.rawValue) != 0,
                // Graphics and compute queues can always copy, whether or not they say so.
                transfer: f.queueFlags & VkQueueFlags(VK_QUEUE_TRANSFER_BIT.rawValue | VK_QUEUE_GRAPHICS_BIT.rawValue | VK_QUEUE_COMPUTE_BIT.rawValue) != 0,
                timestampValidBits: Int(f.timestampValidBits))
        }

        let s = p11.pointee
        self.index = index
        self.name = string(fromCArray: base.deviceName)
        self.vendorID = Int(base.vendorID)
        self.vendor = vendorName(base.vendorID)
        self.deviceID = Int(base.deviceID)
        self.type = DeviceType(base.deviceType)
        self.apiVersionNumber = base.apiVersion
        self.apiVersion = "\(vkattn_api_version_major(base.apiVersion)).\(vkattn_api_version_minor(base.apiVersion)).\(vkattn_api_version_patch(base.apiVersion))"
        self.driverName = string(fromCArray: p12.pointee.driverName)
        self.driverInfo = string(fromCArray: p12.pointee.driverInfo)
        self.driverVersion = Int(base.driverVersion)
        self.subgroupSize = Int(s.subgroupSize)
        self.minSubgroupSize = Int(p13?.pointee.minSubgroupSize ?? s.subgroupSize)
        self.maxSubgroupSize = Int(p13?.pointee.maxSubgroupSize ?? s.subgroupSize)
        self.subgroupOperations = subgroupOperationNames(s.subgroupSupportedOperations)
        self.subgroupInCompute = s.subgroupSupportedStages & VkShaderStageFlags(VK_SHADER_STAGE_COMPUTE_BIT.rawValue) != 0
        if let sm {
            self.computeUnits = Int(sm.pointee.shaderSMCount)
        } else if let amd {
            let a = amd.pointee
            self.computeUnits = Int(a.shaderEngineCount * a.shaderArraysPerEngineCount * a.computeUnitsPerShaderArray)
        } else {
            self.computeUnits = nil
        }
        self.maxComputeSharedMemoryBytes = Int(limits.maxComputeSharedMemorySize)
        self.maxWorkgroupSize = tupleArray(limits.maxComputeWorkGroupSize, as: UInt32.self).map(Int.init)
        self.maxWorkgroupInvocations = Int(limits.maxComputeWorkGroupInvocations)
        self.maxWorkgroupCount = tupleArray(limits.maxComputeWorkGroupCount, as: UInt32.self).map(Int.init)
        self.maxStorageBufferRange = Int(limits.maxStorageBufferRange)
        self.maxMemoryAllocationBytes = Int(s.maxMemoryAllocationSize)
        self.maxBufferBytes = p13.map { Int($0.pointee.maxBufferSize) }
        self.maxPushConstantsBytes = Int(limits.maxPushConstantsSize)
        self.maxPerStageStorageBuffers = Int(limits.maxPerStageDescriptorStorageBuffers)
        self.minStorageBufferOffsetAlignment = Int(limits.minStorageBufferOffsetAlignment)
        self.memoryHeaps = heaps
        self.shaderFloat16 = f12.pointee.shaderFloat16 != 0
        self.shaderFloat64 = core.shaderFloat64 != 0
        self.shaderInt8 = f12.pointee.shaderInt8 != 0
        self.shaderInt16 = core.shaderInt16 != 0
        self.shaderInt64 = core.shaderInt64 != 0
        self.storageBuffer16BitAccess = f11.pointee.storageBuffer16BitAccess != 0
        self.storageBuffer8BitAccess = f12.pointee.storageBuffer8BitAccess != 0
        self.timelineSemaphore = f12.pointee.timelineSemaphore != 0
        self.subgroupSizeControl = (f13?.pointee.subgroupSizeControl ?? 0) != 0
            && (p13?.pointee.requiredSubgroupSizeStages ?? 0) & VkShaderStageFlags(VK_SHADER_STAGE_COMPUTE_BIT.rawValue) != 0
        self.computeFullSubgroups = (f13?.pointee.computeFullSubgroups ?? 0) != 0
        self.vulkanMemoryModel = f12.pointee.vulkanMemoryModel != 0
        self.vulkanMemoryModelDeviceScope = f12.pointee.vulkanMemoryModelDeviceScope != 0
        self.shaderSubgroupExtendedTypes = f12.pointee.shaderSubgroupExtendedTypes != 0
        self.shaderBFloat16Type = (fBF16?.pointee.shaderBFloat16Type ?? 0) != 0
        self.shaderBFloat16CooperativeMatrix = (fBF16?.pointee.shaderBFloat16CooperativeMatrix ?? 0) != 0
        self.cooperativeMatrixKHR = (fKHR?.pointee.cooperativeMatrix ?? 0) != 0
            ? cooperativeMatrixShapesKHR(instance: instance, pd) : []
        self.cooperativeMatrixNV = (fNV?.pointee.cooperativeMatrix ?? 0) != 0
            ? cooperativeMatrixShapesNV(instance: instance, pd) : []
        // llvmpipe's loop limiter (LP_MAX_TGSI_LOOP_ITERATIONS) counts every loop iteration of an
        // invocation against one budget.
        self.loopIterationLimit = string(fromCArray: p12.pointee.driverName) == "llvmpipe" ? 65535 : nil
        self.minImportedHostPointerAlignment = hostImport.map { Int($0.pointee.minImportedHostPointerAlignment) }
        self.timestampPeriodNanoseconds = Double(limits.timestampPeriod)
        self.timestampComputeAndGraphics = limits.timestampComputeAndGraphics != 0
        self.queueFamilies = Array(queueFamilies)
        self.extensions = extensions.sorted()
    }
}

/// Reads a homogeneous C array imported as a tuple.
func tupleArray<Tuple, Element>(_ tuple: Tuple, as: Element.Type) -> [Element] {
    withUnsafeBytes(of: tuple) { Array($0.bindMemory(to: Element.self)) }
}

func deviceExtensions(_ pd: VkPhysicalDevice) -> Set<String> {
    var count: UInt32 = 0
    guard vkEnumerateDeviceExtensionProperties(pd, nil, &count, nil) == VK_SUCCESS else { return [] }
    var props = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(count))
    guard vkEnumerateDeviceExtensionProperties(pd, nil, &count, &props).rawValue >= 0 else { return [] }
    return Set(props.prefix(Int(count)).map { string(fromCArray: $0.extensionName) })
}

func vendorName(_ id: UInt32) -> String {
    switch id {
    case 0x10DE: return "NVIDIA"
    case 0x1002: return "AMD"
    case 0x8086: return "Intel"
    case 0x13B5: return "ARM"
    case 0x5143: return "Qualcomm"
    case 0x106B: return "Apple"
    case 0x10005: return "Mesa"
    default: return "0x" + String(id, radix: 16)
    }
}

func subgroupOperationNames(_ flags: VkSubgroupFeatureFlags) -> [String] {
    let names: [(VkSubgroupFeatureFlagBits, String)] = [
        (VK_SUBGROUP_FEATURE_BASIC_BIT, "basic"), (VK_SUBGROUP_FEATURE_VOTE_BIT, "vote"),
        (VK_SUBGROUP_FEATURE_ARITHMETIC_BIT, "arithmetic"), (VK_SUBGROUP_FEATURE_BALLOT_BIT, "ballot"),
        (VK_SUBGROUP_FEATURE_SHUFFLE_BIT, "shuffle"), (VK_SUBGROUP_FEATURE_SHUFFLE_RELATIVE_BIT, "shuffle-relative"),
        (VK_SUBGROUP_FEATURE_CLUSTERED_BIT, "clustered"), (VK_SUBGROUP_FEATURE_QUAD_BIT, "quad"),
    ]
    return names.filter { flags & $0.0.rawValue != 0 }.map(\.1)
}

func componentTypeName(_ raw: UInt32) -> String {
    switch raw {
    case 0: return "f16"
    case 1: return "f32"
    case 2: return "f64"
    case 3: return "s8"
    case 4: return "s16"
    case 5: return "s32"
    case 6: return "s64"
    case 7: return "u8"
    case 8: return "u16"
    case 9: return "u32"
    case 10: return "u64"
    case 1000141000: return "bf16"
    case 1000491002: return "e4m3"
    case 1000491003: return "e5m2"
    default: return "type\(raw)"
    }
}

func scopeName(_ raw: UInt32) -> String {
    switch raw {
    case 1: return "device"
    case 2: return "workgroup"
    case 3: return "subgroup"
    case 5: return "queue-family"
    default: return "scope\(raw)"
    }
}

func cooperativeMatrixShapesKHR(instance: VkInstance, _ pd: VkPhysicalDevice) -> [CooperativeMatrixShape] {
    guard let query = vkattn_load_cooperative_matrix_khr(instance) else { return [] }
    var count: UInt32 = 0
    guard query(pd, &count, nil) == VK_SUCCESS, count > 0 else { return [] }
    var template = VkCooperativeMatrixPropertiesKHR()
    template.sType = VkStructureType(rawValue: VKATTN_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_KHR)
    var props = [VkCooperativeMatrixPropertiesKHR](repeating: template, count: Int(count))
    guard query(pd, &count, &props).rawValue >= 0 else { return [] }
    return props.prefix(Int(count)).map {
        CooperativeMatrixShape(
            m: Int($0.MSize), n: Int($0.NSize), k: Int($0.KSize),
            aType: componentTypeName($0.AType.rawValue), bType: componentTypeName($0.BType.rawValue),
            cType: componentTypeName($0.CType.rawValue), resultType: componentTypeName($0.ResultType.rawValue),
            scope: scopeName($0.scope.rawValue), saturatingAccumulation: $0.saturatingAccumulation != 0)
    }
}

func cooperativeMatrixShapesNV(instance: VkInstance, _ pd: VkPhysicalDevice) -> [CooperativeMatrixShape] {
    guard let query = vkattn_load_cooperative_matrix_nv(instance) else { return [] }
    var count: UInt32 = 0
    guard query(pd, &count, nil) == VK_SUCCESS, count > 0 else { return [] }
    var template = VkCooperativeMatrixPropertiesNV()
    template.sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV
    var props = [VkCooperativeMatrixPropertiesNV](repeating: template, count: Int(count))
    guard query(pd, &count, &props).rawValue >= 0 else { return [] }
    return props.prefix(Int(count)).map {
        CooperativeMatrixShape(
            m: Int($0.MSize), n: Int($0.NSize), k: Int($0.KSize),
            aType: componentTypeName($0.AType.rawValue), bType: componentTypeName($0.BType.rawValue),
            cType: componentTypeName($0.CType.rawValue), resultType: componentTypeName($0.DType.rawValue),
            scope: scopeName($0.scope.rawValue), saturatingAccumulation: false)
    }
}
