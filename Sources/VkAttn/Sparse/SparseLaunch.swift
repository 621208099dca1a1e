/// Launch sizing and device requirements shared by the sparse ops.
enum SparseLaunch {
    /// The widest team of lanes that always fits in one subgroup of this device (the smallest
    /// subgroup size it may use), at most 32.
    static func subgroupWidth(_ device: Device) -> Int {
        let size = max(1, min(device.capabilities.minSubgroupSize, 32))
        return previousPowerOfTwo(size)
    }

    static func nextPowerOfTwo(_ x: Int) -> Int {
        var p = 1
        while p < x { p <<= 1 }
        return p
    }

    static func previousPowerOfTwo(_ x: Int) -> Int {
        guard x >= 1 else { return 1 }
        var p = 1
        while p * 2 <= x { p <<= 1 }
        return p
    }

    /// Throws unless the device can load values of `dtype` (f16 needs 16-bit storage).
    static func requireValues(op: String, _ dtype: DType, device: Device) throws {
        if dtype.isHalfWidth && !device.enabled.storageBuffer16BitAccess {
            throw VkAttnError.unsupported(op: op, reason: "\(dtype) values need storageBuffer16BitAccess, which \(device.label) does not offer")
        }
    }

    /// Throws unless compute shaders may shuffle within subgroups (the team reductions).
    static func requireShuffle(op: String, device: Device) throws {
        let caps = device.capabilities
        guard caps.subgroupInCompute, caps.subgroupOperations.contains("shuffle") else {
            throw VkAttnError.unsupported(op: op, reason: "needs subgroup shuffles in compute shaders, which \(device.label) does not offer")
        }
    }

    /// Throws unless `tensor` lives on `device`, can be bound whole and starts at an offset the
    /// device can bind.
    static func expectUsable(op: String, _ operand: String, _ tensor: Tensor, device: Device) throws {
        guard tensor.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: operand) }
        try tensor.expectBindable(op: op, operand)
        let alignment = device.capabilities.minStorageBufferOffsetAlignment
        guard tensor.slice.offset % alignment == 0 else {
            throw VkAttnError.invalidValue(op: op, operand: operand, reason: "byte offset \(tensor.slice.offset) is not a multiple of minStorageBufferOffsetAlignment \(alignment)")
        }
    }

    /// Throws unless `value` is finite.
    static func expectFinite(op: String, _ operand: String, _ value: Float) throws {
        guard value.isFinite else { throw VkAttnError.invalidValue(op: op, operand: operand, reason: "\(value) is not finite") }
    }

    /// Groups for a grid-stride launch on x, at least 1.
    static func groups(items: Int, workgroupSize: Int, device: Device) -> Int {
        Launch.gridStrideGroups(items: max(items, 1), workgroupSize: workgroupSize, device: device)
    }
}
