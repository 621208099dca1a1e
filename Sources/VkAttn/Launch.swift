import VulkanCompute

/// Launch geometry shared by the 1-D streaming kernels.
package enum Launch {
    /// Workgroup size for a 1-D kernel: `preferred`, capped by the device.
    package static func workgroupSize(_ preferred: Int, device: Device) -> Int {
        min(preferred, device.capabilities.maxWorkgroupSize[0], device.capabilities.maxWorkgroupInvocations)
    }

    /// Workgroups for a grid-stride loop over `items` items: enough to cover them once, but
    /// no more than the device allows on x nor than keeps every compute unit busy many
    /// times over (the loop does the rest).
    package static func gridStrideGroups(items: Int, workgroupSize: Int, device: Device) -> Int {
        let needed = max(1, (items + workgroupSize - 1) / workgroupSize)
        let resident = (device.capabilities.computeUnits ?? 64) * 32
        return min(needed, resident, device.capabilities.maxWorkgroupCount[0])
    }
}
