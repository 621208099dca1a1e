import CVulkan

/// A physical device of an instance; keeps the instance alive.
public struct PhysicalDevice: Sendable {
    /// The instance that enumerated the device.
    public let instance: Instance
    /// The device's index in the instance's enumeration order (what `VKATTN_DEVICE=<index>` selects).
    public let index: Int

    /// The device's capability report.
    public var capabilities: DeviceCapabilities { instance.capabilities[index] }
    /// The device's name as the driver reports it.
    public var name: String { capabilities.name }
    var handle: VkPhysicalDevice { instance.physicalHandles[index] }
}

extension Instance {
    /// Picks a device: `selector` (or `VKATTN_DEVICE` when nil) is a device index or a
    /// case-insensitive substring of the device name. Without one, prefers a discrete GPU, then
    /// an integrated one, then a virtual one, then a CPU device (lavapipe), skipping devices
    /// VkAttn cannot run on.
    /// - Parameter selector: A device index or a name substring; nil reads `VKATTN_DEVICE`.
    /// - Returns: The chosen physical device.
    /// - Throws: ``VulkanError/noDevices(_:)`` when there is no device (or none VkAttn can run on),
    ///   ``VulkanError/noMatchingDevice(selector:available:)`` when the selector matches nothing,
    ///   ``VulkanError/unsupportedDevice(device:reason:)`` when it matches a device VkAttn cannot
    ///   run on.
    public func selectDevice(_ selector: String? = nil) throws -> PhysicalDevice {
        let devices = physicalDevices
        guard !devices.isEmpty else {
            throw VulkanError.noDevices("the Vulkan loader found no device (Debian: mesa-vulkan-drivers provides lavapipe)")
        }
        let listing = devices.map { "\($0.name) (\($0.capabilities.type.rawValue), Vulkan \($0.capabilities.apiVersion))" }
        let wanted = selector ?? environment(EnvironmentKey.device).flatMap { $0.isEmpty ? nil : $0 }

        let chosen: PhysicalDevice
        if let wanted {
            if let i = Int(wanted) {
                guard devices.indices.contains(i) else {
                    throw VulkanError.noMatchingDevice(selector: wanted, available: listing)
                }
                chosen = devices[i]
            } else {
                guard let match = devices.first(where: { $0.name.lowercased().contains(wanted.lowercased()) }) else {
                    throw VulkanError.noMatchingDevice(selector: wanted, available: listing)
                }
                chosen = match
            }
        } else {
            guard let best = Instance.defaultChoice(devices.map(\.capabilities)) else {
                let reasons = devices.map { "\($0.name): \($0.capabilities.unsupportedReason ?? "")" }
                throw VulkanError.noDevices("no device VkAttn can run on: " + reasons.joined(separator: "; "))
            }
            chosen = devices[best]
        }
        if let reason = chosen.capabilities.unsupportedReason {
            throw VulkanError.unsupportedDevice(device: chosen.name, reason: reason)
        }
        return chosen
    }

    /// The default choice among `devices`: the most preferred type (discrete, integrated,
    /// virtual, CPU, other) among those VkAttn can run on, the lowest index among equals.
    static func defaultChoice(_ devices: [DeviceCapabilities]) -> Int? {
        devices.indices
            .filter { devices[$0].unsupportedReason == nil }
            .min { (devices[$0].type.preference, $0) < (devices[$1].type.preference, $1) }
    }
}
