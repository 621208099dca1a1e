#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import CVulkan

/// Host memory that devices import as buffer memory (VK_EXT_external_memory_host): one
/// allocation seen by several logical devices, so bytes written by one device's GPU copy are
/// read by another's without a host copy.
///
/// Sendable: the pointer and size are set once; the bytes are only touched by GPU copies of
/// the importing buffers (ordered by streams and semaphores) or through those buffers'
/// host-access locks. Freed in deinit, which runs only once every importing `Buffer` (each
/// holds a strong reference) is gone, after its device memory was freed.
public final class HostAllocation: Sendable {
    nonisolated(unsafe) let base: UnsafeMutableRawPointer
    /// Bytes allocated: the requested size rounded up to `alignment`.
    public let byteCount: Int
    /// Alignment of the base address and of the size.
    public let alignment: Int

    /// `byteCount` bytes (rounded up to `alignment`, a power of two; the page size by
    /// default) at an `alignment`-aligned address.
    /// - Parameters:
    ///   - byteCount: The bytes wanted; must be positive.
    ///   - alignment: The alignment of the address and the size: a power of two and a multiple of
    ///     the pointer size.
    /// - Throws: ``VulkanError/invalidArgument(_:)`` for a size that is not positive, a bad
    ///   alignment or an overflow; ``VulkanError/call(_:result:)`` when the host is out of memory.
    public init(byteCount: Int, alignment: Int = Int(getpagesize())) throws {
        guard byteCount > 0 else {
            throw VulkanError.invalidArgument("host allocation size must be positive, got \(byteCount) bytes")
        }
        guard alignment > 0, alignment & (alignment - 1) == 0, alignment % MemoryLayout<UnsafeRawPointer>.size == 0 else {
            throw VulkanError.invalidArgument("host allocation alignment \(alignment) is not a power of two multiple of the pointer size")
        }
        let (rounded, overflow) = byteCount.addingReportingOverflow(alignment - 1)
        guard !overflow else {
            throw VulkanError.invalidArgument("host allocation of \(byteCount) bytes is too large")
        }
        let size = rounded & ~(alignment - 1)
        var pointer: UnsafeMutableRawPointer?
        guard posix_memalign(&pointer, alignment, size) == 0, let pointer else {
            throw VulkanError.call("posix_memalign(\(size) bytes)", result: VK_ERROR_OUT_OF_HOST_MEMORY.rawValue)
        }
        self.base = pointer
        self.byteCount = size
        self.alignment = alignment
    }

    /// A host allocation that `devices` can all import: aligned to the largest of their
    /// minImportedHostPointerAlignment (and the page size).
    /// - Parameters:
    ///   - byteCount: The bytes wanted; rounded up to the alignment.
    ///   - devices: The devices that will import the allocation.
    /// - Throws: ``VulkanError/unsupportedDevice(device:reason:)`` when one of `devices` lacks
    ///   VK_EXT_external_memory_host; the errors of ``init(byteCount:alignment:)``.
    public convenience init(byteCount: Int, importableBy devices: [Device]) throws {
        var alignment = Int(getpagesize())
        for device in devices {
            guard let a = device.capabilities.minImportedHostPointerAlignment, device.enabled.externalMemoryHost else {
                throw VulkanError.unsupportedDevice(device: device.label, reason: "does not offer VK_EXT_external_memory_host")
            }
            alignment = max(alignment, a)
        }
        try self.init(byteCount: byteCount, alignment: alignment)
    }

    deinit { free(base) }
}

extension Buffer {
    /// A buffer on `device` whose memory is bytes `[offset, offset + byteCount)` of `allocation`
    /// (host-visible; mapped). Offset and size must be multiples of the device's
    /// minImportedHostPointerAlignment; `byteCount` defaults to the rest of the allocation.
    /// The buffer keeps `allocation` alive (``hostAllocation``), so the memory outlives every
    /// device that imported it.
    /// - Parameters:
    ///   - allocation: The host memory to import.
    ///   - offset: The first byte of the range, from the allocation's start.
    ///   - byteCount: The range's length; nil for the rest of the allocation.
    ///   - device: The importing device.
    /// - Throws: ``VulkanError/unsupportedDevice(device:reason:)`` when the device lacks the
    ///   extension or no memory type imports the range, ``VulkanError/rangeOutOfBounds(offset:bytes:bufferBytes:)``
    ///   for a range outside the allocation, ``VulkanError/misalignedImport(offset:bytes:alignment:)``
    ///   for a misaligned range, ``VulkanError/bufferTooLarge(bytes:limit:what:)`` past
    ///   maxMemoryAllocationSize, ``VulkanError/call(_:result:)`` when the import fails.
    public convenience init(importing allocation: HostAllocation, offset: Int = 0, byteCount: Int? = nil, on device: Device) throws {
        let bytes = byteCount ?? (allocation.byteCount - offset)
        guard device.enabled.externalMemoryHost, let getProperties = device.hostPointerProperties,
              let alignment = device.capabilities.minImportedHostPointerAlignment else {
            throw VulkanError.unsupportedDevice(device: device.label, reason: "does not offer VK_EXT_external_memory_host")
        }
        guard offset >= 0, bytes > 0, offset <= allocation.byteCount, bytes <= allocation.byteCount - offset else {
            throw VulkanError.rangeOutOfBounds(offset: offset, bytes: bytes, bufferBytes: allocation.byteCount)
        }
        let pointer = allocation.base + offset
        guard Int(bitPattern: pointer) % alignment == 0, bytes % alignment == 0 else {
            throw VulkanError.misalignedImport(offset: offset, bytes: bytes, alignment: alignment)
        }
        let caps = device.capabilities
        if bytes > caps.maxMemoryAllocationBytes {
            throw VulkanError.bufferTooLarge(bytes: bytes, limit: caps.maxMemoryAllocationBytes, what: "maxMemoryAllocationSize")
        }

        let handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT
        var pointerProperties = VkMemoryHostPointerPropertiesEXT()
        pointerProperties.sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT
        try check(getProperties(device.handle, handleType, pointer, &pointerProperties), "vkGetMemoryHostPointerPropertiesEXT")

        let buffer = try Buffer.makeHandle(device: device, byteCount: bytes, external: handleType)
        var requirements = VkMemoryRequirements()
        vkGetBufferMemoryRequirements(device.handle, buffer, &requirements)
        let hostFlags = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
        let allowed = requirements.memoryTypeBits & pointerProperties.memoryTypeBits
        let candidates = device.memoryTypes.indices.filter { allowed & (1 << UInt32($0)) != 0 }
        guard Int(requirements.size) <= bytes,
              let typeIndex = candidates.first(where: { device.memoryTypes[$0].flags & hostFlags == hostFlags }) else {
            vkDestroyBuffer(device.handle, buffer, nil)
            throw VulkanError.unsupportedDevice(
                device: device.label,
                reason: Int(requirements.size) > bytes
                    ? "a buffer of \(bytes) bytes needs \(requirements.size) bytes of imported memory"
                    : "no host-visible memory type imports this host allocation")
        }

        var importInfo = VkImportMemoryHostPointerInfoEXT()
        importInfo.sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT
        importInfo.handleType = handleType
        importInfo.pHostPointer = pointer
        var memory: VkDeviceMemory?
        let r = withUnsafePointer(to: &importInfo) { importPointer in
            var allocate = VkMemoryAllocateInfo()
            allocate.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
            allocate.pNext = UnsafeRawPointer(importPointer)
            allocate.allocationSize = VkDeviceSize(bytes)
            allocate.memoryTypeIndex = UInt32(typeIndex)
            return vkAllocateMemory(device.handle, &allocate, nil, &memory)
        }
        guard r == VK_SUCCESS, let memory else {
            vkDestroyBuffer(device.handle, buffer, nil)
            throw VulkanError.call("vkAllocateMemory(import of \(bytes) host bytes)", result: r.rawValue)
        }
        var mapping: UnsafeMutableRawPointer?
        do {
            try check(vkBindBufferMemory(device.handle, buffer, memory, 0), "vkBindBufferMemory")
            try check(vkMapMemory(device.handle, memory, 0, VkDeviceSize(bytes), 0, &mapping), "vkMapMemory")
        } catch {
            vkFreeMemory(device.handle, memory, nil)
            vkDestroyBuffer(device.handle, buffer, nil)
            throw error
        }
        self.init(device: device, byteCount: bytes, handle: buffer, memory: memory, mapped: mapping, hostAllocation: allocation)
    }
}

extension Device {
    /// A buffer over bytes of `allocation` (see `Buffer.init(importing:offset:byteCount:on:)`).
    /// - Parameters:
    ///   - allocation: The host memory to import.
    ///   - offset: The first byte of the range.
    ///   - byteCount: The range's length; nil for the rest of the allocation.
    /// - Returns: The buffer, host-visible and mapped.
    /// - Throws: The errors of ``Buffer/init(importing:offset:byteCount:on:)``.
    public func importBuffer(_ allocation: HostAllocation, offset: Int = 0, byteCount: Int? = nil) throws -> Buffer {
        try Buffer(importing: allocation, offset: offset, byteCount: byteCount, on: self)
    }
}
