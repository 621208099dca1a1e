import CVulkan
import Synchronization

/// Where a buffer's memory lives.
public enum MemoryLocation: String, Sendable, Codable {
    /// Device-local memory: what kernels read and write. Mapped for direct host access when
    /// the device-local memory is also host-visible (lavapipe, resizable BAR); otherwise host
    /// reads and writes go through a staging copy.
    case device
    /// Host-visible, host-coherent memory (preferably cached): staging and readback.
    case host
}

/// A byte range of a buffer, as bound to a kernel or used by a copy. Never VK_WHOLE_SIZE:
/// every range is explicit and checked against its buffer when made.
public struct BufferSlice: Sendable {
    /// The buffer the range belongs to.
    public let buffer: Buffer
    /// The first byte of the range.
    public let offset: Int
    /// The range's length in bytes; zero for an empty range (a zero-sized tensor's), which
    /// copies, fills and host reads and writes treat as nothing to do and a dispatch binds as
    /// the buffer's first bytes (a descriptor's range is never zero).
    public let byteCount: Int
}

/// A Vulkan buffer with its own memory allocation.
///
/// Sendable: the handles and the mapping are set once in init and released in deinit; host
/// reads and writes of the mapped memory take `hostAccess`, so two tasks never touch the
/// mapping at once. (Device-side access is ordered by streams and their barriers.)
public final class Buffer: Sendable {
    /// The device that owns the memory.
    public let device: Device
    /// The buffer's size in bytes; zero for an empty buffer (whose Vulkan buffer, which cannot
    /// be empty, has ``emptyBackingBytes`` bytes that nothing reads or writes).
    public let byteCount: Int
    /// The size of the Vulkan buffer behind an empty one: Vulkan forbids size-0 buffers, and a
    /// binding needs a valid buffer, so an empty buffer still holds this many bytes.
    public static let emptyBackingBytes = 16
    /// The size of the Vulkan buffer: `byteCount`, or ``emptyBackingBytes`` for an empty buffer.
    let backingBytes: Int
    /// Where the memory lives (an imported host allocation is ``MemoryLocation/host``).
    public let location: MemoryLocation
    nonisolated(unsafe) let handle: VkBuffer
    nonisolated(unsafe) let memory: VkDeviceMemory
    /// Persistent mapping of host-visible, host-coherent memory; nil otherwise.
    nonisolated(unsafe) let mapped: UnsafeMutableRawPointer?
    let hostAccess = Mutex<Void>(())
    /// The host allocation this buffer's memory imports (kept alive while the buffer lives).
    public let hostAllocation: HostAllocation?

    /// True when the host reads and writes the memory directly (no staging copy).
    public var isHostVisible: Bool { mapped != nil }

    init(device: Device, byteCount: Int, location: MemoryLocation) throws {
        let caps = device.capabilities
        guard byteCount >= 0 else {
            throw VulkanError.invalidArgument("buffer size must not be negative, got \(byteCount) bytes")
        }
        let backingBytes = byteCount == 0 ? Buffer.emptyBackingBytes : byteCount
        if byteCount > caps.maxMemoryAllocationBytes {
            throw VulkanError.bufferTooLarge(bytes: byteCount, limit: caps.maxMemoryAllocationBytes, what: "maxMemoryAllocationSize")
        }
        if let maxBuffer = caps.maxBufferBytes, byteCount > maxBuffer {
            throw VulkanError.bufferTooLarge(bytes: byteCount, limit: maxBuffer, what: "maxBufferSize")
        }
        self.device = device
        self.byteCount = byteCount
        self.backingBytes = backingBytes
        self.location = location

        let buffer = try Buffer.makeHandle(device: device, byteCount: backingBytes, external: nil)

        var requirements = VkMemoryRequirements()
        vkGetBufferMemoryRequirements(device.handle, buffer, &requirements)
        let hostFlags = VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT.rawValue | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT.rawValue
        let typeIndex: Int? = {
            let allowed = device.memoryTypes.indices.filter { requirements.memoryTypeBits & (1 << UInt32($0)) != 0 }
            func first(_ predicate: (UInt32) -> Bool) -> Int? { allowed.first { predicate(device.memoryTypes[$0].flags) } }
            let local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT.rawValue
            let cached = VK_MEMORY_PROPERTY_HOST_CACHED_BIT.rawValue
            switch location {
            case .device:
                return first { $0 & local != 0 && $0 & hostFlags == 0 } ?? first { $0 & local != 0 } ?? allowed.first
            case .host:
                return first { $0 & hostFlags == hostFlags && $0 & cached != 0 } ?? first { $0 & hostFlags == hostFlags }
            }
        }()
        guard let typeIndex else {
            vkDestroyBuffer(device.handle, buffer, nil)
            throw VulkanError.unsupportedDevice(device: device.label, reason: "no memory type for a \(location) buffer")
        }
        let heap = device.capabilities.memoryHeaps[device.memoryTypes[typeIndex].heap]
        if Int(requirements.size) > heap.bytes {
            vkDestroyBuffer(device.handle, buffer, nil)
            throw VulkanError.bufferTooLarge(bytes: byteCount, limit: heap.bytes, what: "memory heap \(heap.index)")
        }

        var allocate = VkMemoryAllocateInfo()
        allocate.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        allocate.allocationSize = requirements.size
        allocate.memoryTypeIndex = UInt32(typeIndex)
        var memory: VkDeviceMemory?
        let r = vkAllocateMemory(device.handle, &allocate, nil, &memory)
        guard r == VK_SUCCESS, let memory else {
            vkDestroyBuffer(device.handle, buffer, nil)
            if r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY {
                throw VulkanError.bufferTooLarge(bytes: byteCount, limit: heap.budgetBytes ?? heap.bytes,
                                                 what: "the free memory of heap \(heap.index) (\(resultName(r.rawValue)))")
            }
            throw VulkanError.call("vkAllocateMemory(\(byteCount) bytes)", result: r.rawValue)
        }
        var mapping: UnsafeMutableRawPointer? = nil
        do {
            try check(vkBindBufferMemory(device.handle, buffer, memory, 0), "vkBindBufferMemory")
            if device.memoryTypes[typeIndex].flags & hostFlags == hostFlags {
                try check(vkMapMemory(device.handle, memory, 0, VkDeviceSize(backingBytes), 0, &mapping), "vkMapMemory")
            }
        } catch {
            vkFreeMemory(device.handle, memory, nil)
            vkDestroyBuffer(device.handle, buffer, nil)
            throw error
        }
        self.handle = buffer
        self.memory = memory
        self.mapped = mapping
        self.hostAllocation = nil
        device.track("buffer", 1)
    }

    /// A buffer over memory already allocated and bound (an import, BufferImport.swift).
    init(device: Device, byteCount: Int, handle: VkBuffer, memory: VkDeviceMemory, mapped: UnsafeMutableRawPointer?,
         hostAllocation: HostAllocation) {
        self.device = device
        self.byteCount = byteCount
        self.backingBytes = byteCount
        self.location = .host
        self.handle = handle
        self.memory = memory
        self.mapped = mapped
        self.hostAllocation = hostAllocation
        device.track("buffer", 1)
    }

    /// A buffer handle of `byteCount` bytes for storage and copies (shared by the compute and
    /// transfer families where they differ); `external` names an import's handle type.
    static func makeHandle(device: Device, byteCount: Int, external: VkExternalMemoryHandleTypeFlagBits?) throws -> VkBuffer {
        var info = VkBufferCreateInfo()
        info.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        info.size = VkDeviceSize(byteCount)
        info.usage = VkBufferUsageFlags(VK_BUFFER_USAGE_STORAGE_BUFFER_BIT.rawValue
            | VK_BUFFER_USAGE_TRANSFER_SRC_BIT.rawValue | VK_BUFFER_USAGE_TRANSFER_DST_BIT.rawValue)
        // A buffer over imported memory names the handle type it will be bound to.
        var externalInfo = VkExternalMemoryBufferCreateInfo()
        externalInfo.sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO
        externalInfo.handleTypes = VkExternalMemoryHandleTypeFlags(external?.rawValue ?? 0)
        // With a transfer queue of its own family, buffers are shared by both families
        // (no ownership transfers between copies and dispatches).
        var families = [UInt32(device.computeQueue.family), UInt32(device.transferQueue.family)]
        var buffer: VkBuffer?
        let created = families.withUnsafeMutableBufferPointer { familyPointer in
            if familyPointer[0] != familyPointer[1] {
                info.sharingMode = VK_SHARING_MODE_CONCURRENT
                info.queueFamilyIndexCount = 2
                info.pQueueFamilyIndices = UnsafePointer(familyPointer.baseAddress)
            } else {
                info.sharingMode = VK_SHARING_MODE_EXCLUSIVE
            }
            return withUnsafePointer(to: &externalInfo) { externalPointer in
                if external != nil { info.pNext = UnsafeRawPointer(externalPointer) }
                return vkCreateBuffer(device.handle, &info, nil, &buffer)
            }
        }
        try check(created, "vkCreateBuffer(\(byteCount) bytes)")
        guard let buffer else { throw VulkanError.call("vkCreateBuffer", result: -3) }
        return buffer
    }

    deinit {
        device.track("buffer", -1)
        if mapped != nil { vkUnmapMemory(device.handle, memory) }
        vkDestroyBuffer(device.handle, handle, nil)
        vkFreeMemory(device.handle, memory, nil)
    }

    /// The whole buffer as a slice.
    public var whole: BufferSlice { BufferSlice(buffer: self, offset: 0, byteCount: byteCount) }

    /// Bytes `[offset, offset + byteCount)`; throws when the range leaves the buffer.
    /// - Parameters:
    ///   - offset: The first byte, from the start of the buffer.
    ///   - byteCount: The number of bytes; zero makes an empty slice (at most at the end).
    /// - Returns: The slice.
    /// - Throws: ``VulkanError/rangeOutOfBounds(offset:bytes:bufferBytes:)`` when the range is
    ///   negative or leaves the buffer.
    public func slice(offset: Int, byteCount: Int) throws -> BufferSlice {
        try checkRange(offset: offset, bytes: byteCount)
        return BufferSlice(buffer: self, offset: offset, byteCount: byteCount)
    }

    /// Elements `[first, first + count)` of a buffer seen as an array of `T`.
    /// - Parameters:
    ///   - of: The element type whose stride measures `first` and `count`.
    ///   - first: The first element.
    ///   - count: The number of elements; zero makes an empty slice.
    /// - Returns: The slice.
    /// - Throws: ``VulkanError/rangeOutOfBounds(offset:bytes:bufferBytes:)`` when the range
    ///   leaves the buffer, ``VulkanError/invalidArgument(_:)`` when a size is negative or overflows.
    public func slice<T>(of _: T.Type, first: Int, count: Int) throws -> BufferSlice {
        try slice(offset: byteSize(first, of: T.self), byteCount: byteSize(count, of: T.self))
    }

    func checkRange(offset: Int, bytes: Int) throws {
        guard offset >= 0, bytes >= 0, offset <= byteCount, bytes <= byteCount - offset else {
            throw VulkanError.rangeOutOfBounds(offset: offset, bytes: bytes, bufferBytes: byteCount)
        }
    }

    /// Copies `values` into the buffer at `byteOffset` and returns when the data is in place.
    /// Mapped memory is written directly; device-only memory goes through a host staging buffer
    /// and a copy on a stream of its own, waited for before this returns. Order it after any GPU
    /// work that reads or writes the same bytes.
    /// - Parameters:
    ///   - values: The values to copy; an empty array writes nothing.
    ///   - byteOffset: Where the first value goes.
    /// - Throws: ``VulkanError/rangeOutOfBounds(offset:bytes:bufferBytes:)`` when the values do
    ///   not fit at `byteOffset`; the errors of the staging copy.
    public func write<T: BitwiseCopyable>(_ values: [T], at byteOffset: Int = 0) throws {
        let bytes = try byteSize(values.count, of: T.self)
        guard bytes > 0 else { return }
        try checkRange(offset: byteOffset, bytes: bytes)
        if let mapped {
            hostAccess.withLock { _ in
                values.withUnsafeBytes { source in
                    if let base = source.baseAddress { (mapped + byteOffset).copyMemory(from: base, byteCount: bytes) }
                }
            }
            return
        }
        let staging = try Buffer(device: device, byteCount: bytes, location: .host)
        try staging.write(values)
        let stream = try Stream(device: device)
        try stream.copy(from: staging.whole, to: slice(offset: byteOffset, byteCount: bytes))
        try stream.synchronize()
    }

    /// Reads `count` values of `T` starting at `byteOffset`, after all submitted work that the
    /// caller has waited for.
    /// - Parameters:
    ///   - type: The element type.
    ///   - count: How many values to read.
    ///   - byteOffset: Where the first value starts.
    /// - Returns: The values, copied out of the buffer.
    /// - Throws: ``VulkanError/rangeOutOfBounds(offset:bytes:bufferBytes:)`` when the range
    ///   leaves the buffer; the errors of the staging copy for device-only memory.
    public func read<T: BitwiseCopyable>(_: T.Type, count: Int, at byteOffset: Int = 0) throws -> [T] {
        let bytes = try byteSize(count, of: T.self)
        guard count > 0 else { return [] }
        try checkRange(offset: byteOffset, bytes: bytes)
        if let mapped {
            let start = mapped + byteOffset
            return [T](unsafeUninitializedCapacity: count) { out, initialized in
                if let base = out.baseAddress {
                    hostAccess.withLock { _ in UnsafeMutableRawPointer(base).copyMemory(from: start, byteCount: bytes) }
                }
                initialized = count
            }
        }
        let staging = try Buffer(device: device, byteCount: bytes, location: .host)
        let stream = try Stream(device: device)
        try stream.copy(from: slice(offset: byteOffset, byteCount: bytes), to: staging.whole)
        try stream.synchronize()
        return try staging.read(T.self, count: count)
    }
}

extension Device {
    /// A new buffer of `byteCount` bytes; contents undefined. An empty buffer (0 bytes) is
    /// legal: it reports 0 bytes and is backed by a Vulkan buffer of
    /// ``Buffer/emptyBackingBytes`` (Vulkan has no empty buffers), so its slices can be bound.
    /// - Parameters:
    ///   - byteCount: The size in bytes; zero or more.
    ///   - location: Device-local (the default) or host-visible staging memory.
    /// - Returns: The buffer.
    /// - Throws: ``VulkanError/invalidArgument(_:)`` for a negative size,
    ///   ``VulkanError/bufferTooLarge(bytes:limit:what:)`` past an allocation, buffer or heap
    ///   limit (or when the heap is out of memory), ``VulkanError/call(_:result:)`` otherwise.
    public func makeBuffer(byteCount: Int, location: MemoryLocation = .device) throws -> Buffer {
        try Buffer(device: self, byteCount: byteCount, location: location)
    }

    /// A new buffer holding `values`.
    /// - Parameters:
    ///   - values: The initial contents; may be empty (an empty buffer).
    ///   - location: Device-local (the default) or host-visible staging memory.
    /// - Returns: The buffer, its contents written and in place.
    /// - Throws: The errors of ``makeBuffer(byteCount:location:)`` and of ``Buffer/write(_:at:)``.
    public func makeBuffer<T: BitwiseCopyable>(_ values: [T], location: MemoryLocation = .device) throws -> Buffer {
        let buffer = try Buffer(device: self, byteCount: byteSize(values.count, of: T.self), location: location)
        try buffer.write(values)
        return buffer
    }

    /// A new buffer for `count` values of `T`; contents undefined.
    /// - Parameters:
    ///   - of: The element type.
    ///   - count: The number of elements; zero or more.
    ///   - location: Device-local (the default) or host-visible staging memory.
    /// - Returns: The buffer.
    /// - Throws: The errors of ``makeBuffer(byteCount:location:)``.
    public func makeBuffer<T>(of _: T.Type, count: Int, location: MemoryLocation = .device) throws -> Buffer {
        try Buffer(device: self, byteCount: byteSize(count, of: T.self), location: location)
    }
}

/// `count * stride(T)`, or a typed error for a negative count or an overflow.
/// - Parameters:
///   - count: The number of elements.
///   - of: The element type.
/// - Returns: The size in bytes.
/// - Throws: ``VulkanError/invalidArgument(_:)`` for a negative count or an overflow.
public func byteSize<T>(_ count: Int, of _: T.Type) throws -> Int {
    let (bytes, overflow) = count.multipliedReportingOverflow(by: MemoryLayout<T>.stride)
    guard count >= 0, !overflow else {
        throw VulkanError.invalidArgument("\(count) elements of \(T.self) is not a valid buffer size")
    }
    return bytes
}
