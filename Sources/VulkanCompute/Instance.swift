import CVulkan

/// Which Khronos validation checks to turn on.
public struct ValidationOptions: Sendable, Equatable, Codable {
    /// The core checks of VK_LAYER_KHRONOS_validation.
    public var enabled: Bool
    /// Also synchronization validation (missing barriers, hazards between dispatches).
    public var synchronization: Bool

    /// Validation options; synchronization validation is kept only with the core checks on.
    /// - Parameters:
    ///   - enabled: Turn on VK_LAYER_KHRONOS_validation.
    ///   - synchronization: Also turn on synchronization validation (ignored when `enabled` is false).
    public init(enabled: Bool, synchronization: Bool = false) {
        self.enabled = enabled
        self.synchronization = synchronization && enabled
    }

    /// No validation layer.
    public static let off = ValidationOptions(enabled: false)

    /// `VKATTN_VALIDATION`: unset, empty or `0` is off; `1` turns the layer on; a value
    /// containing `sync` adds synchronization validation.
    /// - Returns: The options `VKATTN_VALIDATION` asks for; ``off`` when it is unset.
    public static func fromEnvironment() -> ValidationOptions {
        guard let value = environment(EnvironmentKey.validation)?.lowercased(),
              !value.isEmpty, value != "0", value != "off", value != "false" else { return .off }
        return ValidationOptions(enabled: true, synchronization: value.contains("sync"))
    }
}

/// The Vulkan instance: the loader, the validation layer when asked for, and the physical
/// devices with their capability reports.
///
/// Sendable: the handles are set once in `init` and destroyed in `deinit`; Vulkan allows the
/// instance-level queries used here from any thread, and the validation log is behind a lock.
public final class Instance: Sendable {
    /// Immutable after init; only `deinit` destroys it (no other reference can exist then).
    nonisolated(unsafe) let handle: VkInstance
    /// Immutable after init; destroyed in `deinit` before the instance.
    nonisolated(unsafe) private let messenger: VkDebugUtilsMessengerEXT?
    /// Physical-device handles are owned by the instance and valid as long as it lives.
    nonisolated(unsafe) let physicalHandles: [VkPhysicalDevice]

    /// Validation messages (warnings and errors) of this instance and its devices.
    public let log: ValidationLog
    /// The validation actually enabled.
    public let validation: ValidationOptions
    /// Capability reports of every physical device, in enumeration order.
    public let capabilities: [DeviceCapabilities]

    /// Creates an instance. With validation requested but VK_LAYER_KHRONOS_validation not
    /// installed, throws `validationLayerMissing` rather than running unchecked.
    /// - Parameters:
    ///   - validation: Which validation to enable; by default what `VKATTN_VALIDATION` says.
    ///   - log: Where the validation messages of this instance and its devices are collected.
    /// - Throws: ``VulkanError/validationLayerMissing`` when validation is asked for and the layer
    ///   is absent; ``VulkanError/noDevices(_:)`` when there is no Vulkan driver;
    ///   ``VulkanError/call(_:result:)`` when a Vulkan call fails.
    public init(validation: ValidationOptions = .fromEnvironment(), log: ValidationLog = ValidationLog()) throws {
        self.log = log
        self.validation = validation

        let layerVersions = try Instance.layerVersions()
        let layerName = "VK_LAYER_KHRONOS_validation"
        if validation.enabled && layerVersions[layerName] == nil {
            throw VulkanError.validationLayerMissing
        }
        // Layers before SDK 1.3.296 time out on legal host-signaled timeline waits under load
        // (UNASSIGNED-VkSemaphore-state-timeout, "most likely a validation bug"; fixed by
        // KhronosGroup/Vulkan-ValidationLayers#8519). Debian 12 ships 1.3.239: there it is counted
        // as a known layer bug, not a finding. Newer layers report everything.
        if let version = layerVersions[layerName], version < vkattn_make_api_version(0, 1, 3, 296) {
            log.knownLayerBugs = [ValidationLog.semaphoreStateTimeout]
        }
        let available = try Instance.extensionNames(layer: nil)
        let layerExtensions = validation.enabled ? try Instance.extensionNames(layer: layerName) : []

        var extensions: [String] = []
        let useDebugUtils = validation.enabled
            && (available.contains("VK_EXT_debug_utils") || layerExtensions.contains("VK_EXT_debug_utils"))
        if useDebugUtils { extensions.append("VK_EXT_debug_utils") }
        let useValidationFeatures = validation.synchronization && layerExtensions.contains("VK_EXT_validation_features")
        if useValidationFeatures { extensions.append("VK_EXT_validation_features") }
        let portability = available.contains("VK_KHR_portability_enumeration")
        if portability { extensions.append("VK_KHR_portability_enumeration") }
        let layers = validation.enabled ? [layerName] : []

        var appInfo = VkApplicationInfo()
        appInfo.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO
        appInfo.apiVersion = vkattn_make_api_version(0, 1, 3, 0)

        var messengerInfo = messengerCreateInfo(log)
        var enables: [VkValidationFeatureEnableEXT] = [VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT]
        var features = VkValidationFeaturesEXT()
        features.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT

        var created: VkInstance?
        let result: VkResult = "VkAttn".withCString { appName in
            appInfo.pApplicationName = appName
            return withCStringArray(layers) { layerPointers in
                withCStringArray(extensions) { extensionPointers in
                    enables.withUnsafeMutableBufferPointer { enableBuffer in
                        withUnsafeMutablePointer(to: &messengerInfo) { messengerPointer in
                            withUnsafeMutablePointer(to: &features) { featuresPointer in
                                withUnsafePointer(to: &appInfo) { appPointer in
                                    var info = VkInstanceCreateInfo()
                                    info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
                                    info.pApplicationInfo = appPointer
                                    info.enabledLayerCount = UInt32(layers.count)
                                    info.ppEnabledLayerNames = layerPointers
                                    info.enabledExtensionCount = UInt32(extensions.count)
                                    info.ppEnabledExtensionNames = extensionPointers
                                    if portability {
                                        info.flags = VkInstanceCreateFlags(VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR.rawValue)
                                    }
                                    // The messenger in pNext also reports on vkCreate/DestroyInstance.
                                    var chain: UnsafeMutableRawPointer? = nil
                                    if useValidationFeatures {
                                        featuresPointer.pointee.enabledValidationFeatureCount = 1
                                        featuresPointer.pointee.pEnabledValidationFeatures = UnsafePointer(enableBuffer.baseAddress)
                                        chain = UnsafeMutableRawPointer(featuresPointer)
                                    }
                                    if useDebugUtils {
                                        messengerPointer.pointee.pNext = UnsafeRawPointer(chain)
                                        chain = UnsafeMutableRawPointer(messengerPointer)
                                    }
                                    info.pNext = UnsafeRawPointer(chain)
                                    return vkCreateInstance(&info, nil, &created)
                                }
                            }
                        }
                    }
                }
            }
        }
        if result == VK_ERROR_INCOMPATIBLE_DRIVER || result == VK_ERROR_INITIALIZATION_FAILED {
            throw VulkanError.noDevices("vkCreateInstance: \(resultName(result.rawValue)); is a Vulkan driver installed? "
                + "(Debian: mesa-vulkan-drivers provides lavapipe)")
        }
        try check(result, "vkCreateInstance")
        guard let instance = created else { throw VulkanError.call("vkCreateInstance", result: -3) }

        var messenger: VkDebugUtilsMessengerEXT? = nil
        if useDebugUtils, let create = vkattn_load_create_debug_messenger(instance) {
            var info = messengerCreateInfo(log)
            let r = create(instance, &info, nil, &messenger)
            if r != VK_SUCCESS {
                vkDestroyInstance(instance, nil)
                throw VulkanError.call("vkCreateDebugUtilsMessengerEXT", result: r.rawValue)
            }
        }

        var count: UInt32 = 0
        var handles: [VkPhysicalDevice] = []
        var r = vkEnumeratePhysicalDevices(instance, &count, nil)
        if r == VK_SUCCESS && count > 0 {
            var raw = [VkPhysicalDevice?](repeating: nil, count: Int(count))
            r = vkEnumeratePhysicalDevices(instance, &count, &raw)
            handles = raw.prefix(Int(count)).compactMap { $0 }
        }
        var reports: [DeviceCapabilities] = []
        for (i, h) in handles.enumerated() {
            reports.append(DeviceCapabilities(instance: instance, physicalDevice: h, index: i))
        }

        self.handle = instance
        self.messenger = messenger
        self.physicalHandles = handles
        self.capabilities = reports
        if r.rawValue < 0 { throw VulkanError.call("vkEnumeratePhysicalDevices", result: r.rawValue) }
    }

    deinit {
        if let messenger, let destroy = vkattn_load_destroy_debug_messenger(handle) {
            destroy(handle, messenger, nil)
        }
        vkDestroyInstance(handle, nil)
    }

    /// The physical devices, in enumeration order.
    public var physicalDevices: [PhysicalDevice] {
        physicalHandles.indices.map { PhysicalDevice(instance: self, index: $0) }
    }

    static func layerNames() throws -> Set<String> {
        Set(try layerVersions().keys)
    }

    /// Installed layers and the Vulkan header version (spec version) each was built against.
    static func layerVersions() throws -> [String: UInt32] {
        var count: UInt32 = 0
        try check(vkEnumerateInstanceLayerProperties(&count, nil), "vkEnumerateInstanceLayerProperties")
        var props = [VkLayerProperties](repeating: VkLayerProperties(), count: Int(count))
        try check(vkEnumerateInstanceLayerProperties(&count, &props), "vkEnumerateInstanceLayerProperties")
        return Dictionary(props.prefix(Int(count)).map { (string(fromCArray: $0.layerName), $0.specVersion) }, uniquingKeysWith: max)
    }

    static func extensionNames(layer: String?) throws -> Set<String> {
        var count: UInt32 = 0
        let call = "vkEnumerateInstanceExtensionProperties"
        if let layer {
            try layer.withCString { try check(vkEnumerateInstanceExtensionProperties($0, &count, nil), call) }
        } else {
            try check(vkEnumerateInstanceExtensionProperties(nil, &count, nil), call)
        }
        var props = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(count))
        if let layer {
            try layer.withCString { try check(vkEnumerateInstanceExtensionProperties($0, &count, &props), call) }
        } else {
            try check(vkEnumerateInstanceExtensionProperties(nil, &count, &props), call)
        }
        return Set(props.prefix(Int(count)).map { string(fromCArray: $0.extensionName) })
    }
}
