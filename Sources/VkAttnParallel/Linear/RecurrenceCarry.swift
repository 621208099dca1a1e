import VkAttn
import VulkanCompute
import VkAttnShaders

/// The elementwise steps of `ContextParallelRecurrence` (Shaders/parallel/recurrence_carry.comp):
/// packing a shard's affine map per channel, adding the carried state (forward) or gradient
/// (backward) into the local results, and the shard's boundary states.
enum RecurrenceCarry {
    enum Mode: Int {
        case pack = 0, forward, backward, state
    }

    /// The operands of one step; nil ones are bound to `dummy` and never read.
    struct Operands {
        var m: BufferSlice?
        var x: BufferSlice?
        var scan: BufferSlice?
        var y: BufferSlice
        var z: BufferSlice?
        var h: BufferSlice?
        var incoming: BufferSlice?
    }

    /// Records one step over `count` elements (forward, backward: the shard's [B, L, D] or
    /// [B, D, L] values) or channels (pack, state). `affine`: state = x + m * s (else s);
    /// `reversed`: the recurrence runs backward in time; `complex`: values are (re, im) pairs
    /// (`count` counts pairs).
    static func encode(_ mode: Mode, count: Int, length: Int, channels: Int, bdl: Bool, affine: Bool = false,
                       reversed: Bool = false, _ o: Operands, dummy: BufferSlice, complex: Bool, on stream: Stream) throws {
        guard count > 0 else { return }
        let device = stream.device
        let wg = Launch.workgroupSize(ParallelKernels.group, device: device)
        let shader = mode == .backward ? Shaders.parallelRecurrenceCarryBackward : Shaders.parallelRecurrenceCarryReads
        let kernel = try device.kernel(KernelDescriptor(shader: shader, bindings: 7,
                                                        specialization: ["local_size_x": .int(wg), "MODE": .int(mode.rawValue), "COMPLEX": .bool(complex)]))
        let slots = try [o.m, o.x, o.scan, o.y, o.z, o.h, o.incoming].map { try ParallelKernels.bindable($0 ?? dummy) }
        let words = try zip(slots, ["m", "x", "scan", "y", "z", "h", "incoming"]).map { slot, name in try UInt32(pushing: slot.word, "\(name) offset") }
        let push = RecurrenceCarryPush(
            n: try UInt32(pushing: count, "elements"), steps: try UInt32(pushing: length, "length"), channels: try UInt32(pushing: channels, "channels"),
            bdl: bdl ? 1 : 0, flags: UInt32((affine ? 1 : 0) | (o.incoming != nil ? 2 : 0) | (reversed ? 4 : 0)),
            mOffset: words[0], xOffset: words[1], scanOffset: words[2], yOffset: words[3], zOffset: words[4], hOffset: words[5],
            incomingOffset: words[6])
        try stream.dispatch(kernel, bindings: slots.map(\.range), push: push,
                            groups: (ParallelKernels.groups(count, device), 1, 1))
    }
}

/// Shaders/parallel/recurrence_carry.comp (offsets in words past each binding).
struct RecurrenceCarryPush: PushConstantBlock {
    var n: UInt32, steps: UInt32, channels: UInt32
    var bdl: UInt32, flags: UInt32
    var mOffset: UInt32, xOffset: UInt32, scanOffset: UInt32, yOffset: UInt32, zOffset: UInt32, hOffset: UInt32
    var incomingOffset: UInt32
}
