import CVulkan

/// A specialization-constant value: 32 bits, typed by the shader's declaration.
public struct SpecializationValue: Hashable, Sendable {
    /// The constant's 32 bits as the shader reads them.
    public let bits: UInt32
    /// A `uint` constant.
    /// - Parameter v: The value.
    /// - Returns: The specialization value.
    public static func u32(_ v: UInt32) -> Self { Self(bits: v) }
    /// An `int` constant.
    /// - Parameter v: The value.
    /// - Returns: The specialization value (two's complement bits).
    public static func i32(_ v: Int32) -> Self { Self(bits: UInt32(bitPattern: v)) }
    /// A `float` constant.
    /// - Parameter v: The value.
    /// - Returns: The specialization value (IEEE 754 bits).
    public static func f32(_ v: Float) -> Self { Self(bits: v.bitPattern) }
    /// A `bool` constant.
    /// - Parameter v: The value.
    /// - Returns: The specialization value (1 or 0).
    public static func bool(_ v: Bool) -> Self { Self(bits: v ? 1 : 0) }
    /// An Int that must fit a 32-bit constant (sizes, counts).
    /// - Parameter v: The value; its low 32 bits are kept.
    /// - Returns: The specialization value.
    public static func int(_ v: Int) -> Self { Self(bits: UInt32(truncatingIfNeeded: v)) }
}

/// Everything that makes a compute pipeline: the shader (whose `ShaderInterface` gives the
/// push-constant layout), its storage-buffer bindings 0..<bindings in set 0 and its
/// specialization. Hashable: it is the key of the device's pipeline cache.
public struct KernelDescriptor: Hashable, Sendable {
    /// The embedded shader variant.
    public var shader: ShaderSource
    /// The number of storage buffers, bound at 0..<bindings of set 0.
    public var bindings: Int
    /// Specialization constants by their GLSL names (`local_size_x` for `local_size_x_id`);
    /// `Device.kernel` refuses a name the shader does not declare.
    public var specialization: [String: SpecializationValue]
    /// Pin the subgroup size (VK_EXT_subgroup_size_control / Vulkan 1.3), or nil for the default.
    public var requiredSubgroupSize: Int?
    /// Require full subgroups (computeFullSubgroups), for shaders that assume them.
    public var fullSubgroups: Bool

    /// A pipeline description.
    /// - Parameters:
    ///   - shader: the embedded shader variant.
    ///   - bindings: storage buffers bound at 0..<bindings of set 0.
    ///   - specialization: values of the shader's specialization constants, by GLSL name;
    ///     unnamed ones keep the shader's defaults.
    ///   - requiredSubgroupSize: a subgroup size to pin, or nil.
    ///   - fullSubgroups: whether the shader needs full subgroups.
    public init(shader: ShaderSource, bindings: Int, specialization: [String: SpecializationValue] = [:],
                requiredSubgroupSize: Int? = nil, fullSubgroups: Bool = false) {
        self.shader = shader
        self.bindings = bindings
        self.specialization = specialization
        self.requiredSubgroupSize = requiredSubgroupSize
        self.fullSubgroups = fullSubgroups
    }

    /// The push-constant block's size, from the shader's interface.
    public var pushConstantBytes: Int { shader.interface.pushConstantBytes }
}

/// The Vulkan objects of one pipeline, owned by the device's cache and destroyed with it.
///
/// Sendable: the handles never change; pipelines and layouts may be used from any thread.
final class PipelineObject: Sendable {
    nonisolated(unsafe) let pipeline: VkPipeline
    nonisolated(unsafe) let layout: VkPipelineLayout
    nonisolated(unsafe) let setLayout: VkDescriptorSetLayout

    init(pipeline: VkPipeline, layout: VkPipelineLayout, setLayout: VkDescriptorSetLayout) {
        self.pipeline = pipeline
        self.layout = layout
        self.setLayout = setLayout
    }

    func destroy(device: VkDevice) {
        vkDestroyPipeline(device, pipeline, nil)
        vkDestroyPipelineLayout(device, layout, nil)
        vkDestroyDescriptorSetLayout(device, setLayout, nil)
    }
}

/// A compiled compute pipeline, ready to dispatch on its device.
public struct Kernel: Sendable {
    /// The device the pipeline was made on.
    public let device: Device
    /// What the pipeline was made from.
    public let descriptor: KernelDescriptor
    let object: PipelineObject
}

extension Device {
    /// The pipeline for `descriptor`, compiled on first use and cached for the device's life.
    /// Safe to call from several tasks at once.
    /// - Parameter descriptor: The shader, bindings and specialization.
    /// - Returns: The kernel.
    /// - Throws: ``VulkanError/invalidArgument(_:)`` for more bindings or push-constant bytes than
    ///   the device allows or a specialization name the shader does not declare;
    ///   ``VulkanError/unsupportedDevice(device:reason:)`` for a subgroup size or full subgroups
    ///   the device cannot pin; ``VulkanError/shaderUnavailable(name:reason:)`` for a shader this
    ///   build could not compile; ``VulkanError/call(_:result:)`` when pipeline creation fails.
    public func kernel(_ descriptor: KernelDescriptor) throws -> Kernel {
        let caps = capabilities
        guard descriptor.bindings >= 0, descriptor.bindings <= caps.maxPerStageStorageBuffers else {
            throw VulkanError.invalidArgument("kernel \(descriptor.shader.name): \(descriptor.bindings) bindings, device allows \(caps.maxPerStageStorageBuffers)")
        }
        guard descriptor.pushConstantBytes >= 0, descriptor.pushConstantBytes % 4 == 0,
              descriptor.pushConstantBytes <= caps.maxPushConstantsBytes else {
            throw VulkanError.invalidArgument("kernel \(descriptor.shader.name): \(descriptor.pushConstantBytes) push-constant bytes, device allows \(caps.maxPushConstantsBytes) in multiples of 4")
        }
        if let size = descriptor.requiredSubgroupSize {
            guard enabled.subgroupSizeControl, size >= caps.minSubgroupSize, size <= caps.maxSubgroupSize,
                  size & (size - 1) == 0 else {
                throw VulkanError.unsupportedDevice(device: label, reason: "subgroup size \(size) cannot be required (range \(caps.minSubgroupSize)...\(caps.maxSubgroupSize), control \(enabled.subgroupSizeControl ? "on" : "off"))")
            }
        }
        let declared = descriptor.shader.interface.specializationIDs
        if descriptor.shader.isAvailable, let unknown = descriptor.specialization.keys.sorted().first(where: { declared[$0] == nil }) {
            throw VulkanError.invalidArgument("kernel \(descriptor.shader.name): no specialization constant named \(unknown) (the shader declares \(declared.keys.sorted()))")
        }
        if descriptor.fullSubgroups && !enabled.computeFullSubgroups {
            throw VulkanError.unsupportedDevice(device: label, reason: "computeFullSubgroups is not offered")
        }
        let spirv = try descriptor.shader.spirv()
        let object = try pipelines.withLock { cache in
            if let cached = cache[descriptor] { return cached }
            let created = try makePipeline(descriptor, spirv: spirv)
            cache[descriptor] = created
            return created
        }
        return Kernel(device: self, descriptor: descriptor, object: object)
    }

    /// How many pipelines the cache holds (for tests of the cache).
    public var cachedKernelCount: Int { pipelines.withLock { $0.count } }

    private func makePipeline(_ d: KernelDescriptor, spirv: [UInt32]) throws -> PipelineObject {
        var module: VkShaderModule?
        try spirv.withUnsafeBufferPointer { code in
            var info = VkShaderModuleCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO
            info.codeSize = code.count * 4
            info.pCode = code.baseAddress
            try check(vkCreateShaderModule(handle, &info, nil, &module), "vkCreateShaderModule(\(d.shader.name))")
        }
        guard let module else { throw VulkanError.call("vkCreateShaderModule", result: -3) }
        defer { vkDestroyShaderModule(handle, module, nil) }

        var layoutBindings = (0..<d.bindings).map { i -> VkDescriptorSetLayoutBinding in
            var b = VkDescriptorSetLayoutBinding()
            b.binding = UInt32(i)
            b.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER
            b.descriptorCount = 1
            b.stageFlags = VkShaderStageFlags(VK_SHADER_STAGE_COMPUTE_BIT.rawValue)
            return b
        }
        var setLayout: VkDescriptorSetLayout?
        try layoutBindings.withUnsafeMutableBufferPointer { bindings in
            var info = VkDescriptorSetLayoutCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO
            info.bindingCount = UInt32(bindings.count)
            info.pBindings = UnsafePointer(bindings.baseAddress)
            try check(vkCreateDescriptorSetLayout(handle, &info, nil, &setLayout), "vkCreateDescriptorSetLayout")
        }
        guard let setLayout else { throw VulkanError.call("vkCreateDescriptorSetLayout", result: -3) }

        var pushRange = VkPushConstantRange()
        pushRange.stageFlags = VkShaderStageFlags(VK_SHADER_STAGE_COMPUTE_BIT.rawValue)
        pushRange.size = UInt32(d.pushConstantBytes)
        var setLayoutOptional: VkDescriptorSetLayout? = setLayout
        var layout: VkPipelineLayout?
        var info = VkPipelineLayoutCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO
        info.setLayoutCount = 1
        let layoutResult = withUnsafePointer(to: &setLayoutOptional) { sl in
            withUnsafePointer(to: &pushRange) { pr in
                info.pSetLayouts = sl
                info.pushConstantRangeCount = d.pushConstantBytes > 0 ? 1 : 0
                info.pPushConstantRanges = d.pushConstantBytes > 0 ? pr : nil
                return vkCreatePipelineLayout(handle, &info, nil, &layout)
            }
        }
        guard layoutResult == VK_SUCCESS, let layout else {
            vkDestroyDescriptorSetLayout(handle, setLayout, nil)
            throw VulkanError.call("vkCreatePipelineLayout", result: layoutResult.rawValue)
        }

        // Specialization constants, in id order (names were checked by `kernel`).
        let byID = Dictionary(d.specialization.compactMap { name, value in d.shader.interface.specializationIDs[name].map { ($0, value) } },
                              uniquingKeysWith: { a, _ in a })
        let ids = byID.keys.sorted()
        var entries = ids.enumerated().map { i, id -> VkSpecializationMapEntry in
            VkSpecializationMapEntry(constantID: id, offset: UInt32(i * 4), size: 4)
        }
        var data = ids.map { byID[$0]?.bits ?? 0 }
        var subgroupInfo = VkPipelineShaderStageRequiredSubgroupSizeCreateInfo()
        subgroupInfo.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO
        subgroupInfo.requiredSubgroupSize = UInt32(d.requiredSubgroupSize ?? 0)
        var pipeline: VkPipeline?
        let result = "main".withCString { entryName in
            entries.withUnsafeMutableBufferPointer { entryBuffer in
                data.withUnsafeMutableBytes { dataBytes in
                    withUnsafeMutablePointer(to: &subgroupInfo) { subgroupPointer in
                        var spec = VkSpecializationInfo()
                        spec.mapEntryCount = UInt32(entryBuffer.count)
                        spec.pMapEntries = UnsafePointer(entryBuffer.baseAddress)
                        spec.dataSize = dataBytes.count
                        spec.pData = UnsafeRawPointer(dataBytes.baseAddress)
                        return withUnsafePointer(to: &spec) { specPointer in
                            var stage = VkPipelineShaderStageCreateInfo()
                            stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
                            stage.stage = VK_SHADER_STAGE_COMPUTE_BIT
                            stage.module = module
                            stage.pName = entryName
                            stage.pSpecializationInfo = ids.isEmpty ? nil : specPointer
                            if d.requiredSubgroupSize != nil { stage.pNext = UnsafeRawPointer(subgroupPointer) }
                            var flags: UInt32 = 0
                            if d.fullSubgroups { flags |= VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT.rawValue }
                            stage.flags = VkPipelineShaderStageCreateFlags(flags)
                            var info = VkComputePipelineCreateInfo()
                            info.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
                            info.stage = stage
                            info.layout = layout
                            return vkCreateComputePipelines(handle, nil, 1, &info, nil, &pipeline)
                        }
                    }
                }
            }
        }
        guard result == VK_SUCCESS, let pipeline else {
            vkDestroyPipelineLayout(handle, layout, nil)
            vkDestroyDescriptorSetLayout(handle, setLayout, nil)
            throw VulkanError.call("vkCreateComputePipelines(\(d.shader.name))", result: result.rawValue)
        }
        // Validation messages name the pipeline by its shader (variant) rather than a handle.
        if instance.validation.enabled, let setName = vkattn_load_set_object_name(instance.handle) {
            d.shader.name.withCString { name in
                var info = VkDebugUtilsObjectNameInfoEXT()
                info.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_OBJECT_NAME_INFO_EXT
                info.objectType = VK_OBJECT_TYPE_PIPELINE
                info.objectHandle = UInt64(UInt(bitPattern: pipeline))
                info.pObjectName = name
                _ = setName(handle, &info)
            }
        }
        return PipelineObject(pipeline: pipeline, layout: layout, setLayout: setLayout)
    }
}
