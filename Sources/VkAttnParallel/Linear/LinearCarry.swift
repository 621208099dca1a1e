import VkAttn
import VulkanCompute
import VkAttnShaders

/// The kernels a rank adds to its local chunked GLA to join the cross-rank affine scan
/// (Shaders/parallel/linear_carry.comp): the shard's cumulative log-gates, its total decay
/// (column a of the scan value), the forward correction o_t += (q_t exp(G_t)) S_in, and the
/// gradient of the shard's initial state from its own outputs (the backward's scan value).
/// One shard [B, L, H, *]; chunks of `chunk` rows keep every loop under lavapipe's cap.
struct LinearCarry {
    let device: Device
    let gating: GatedLinearAttention.Gating
    let B: Int, L: Int, H: Int, Dk: Int, Dv: Int
    let C = 64
    let NC: Int
    /// Chunk-local cumulative log-gates (the gates' shape) and the chunk offsets
    /// [B, H, gates per head, NC]; 16-byte placeholders without gates.
    let gcum: Buffer
    let off: Buffer
    let placeholder: Buffer

    init(device: Device, gating: GatedLinearAttention.Gating, batch: Int, length: Int, heads: Int, dk: Int, dv: Int) throws {
        self.device = device
        self.gating = gating
        (B, L, H, Dk, Dv) = (batch, length, heads, dk, dv)
        NC = (length + C - 1) / C
        let perHead = gating == .perKey ? dk : 1
        let gated = gating != .none
        gcum = try device.makeBuffer(byteCount: gated ? B * L * H * perHead * 4 : 16)
        off = try device.makeBuffer(byteCount: gated ? B * H * perHead * NC * 4 : 16)
        placeholder = try device.makeBuffer(byteCount: 16)
    }

    /// Rows (b, h, i) of a scan value, each [a, b_0 .. b_{Dv-1}].
    var rows: Int { B * H * Dk }
    var width: Int { Dv + 1 }
    var gatesPerHead: Int { gating == .perKey ? Dk : 1 }
    var gateMode: Int { gating == .none ? 0 : (gating == .perHead ? 1 : 2) }

    func kernel(mode: Int) throws -> Kernel {
        try device.kernel(KernelDescriptor(shader: Shaders.parallelLinearCarry, bindings: 5,
                                           specialization: ["local_size_x": .int(64), "GATE": .int(gateMode), "MODE": .int(mode)]))
    }

    func push() throws -> GLAPush {
        GLAPush(B: try UInt32(pushing: B, "linear carry B"), L: try UInt32(pushing: L, "linear carry L"), H: try UInt32(pushing: H, "linear carry H"),
                Dk: try UInt32(pushing: Dk, "linear carry Dk"), Dv: try UInt32(pushing: Dv, "linear carry Dv"),
                C: try UInt32(pushing: C, "linear carry chunk"), NC: try UInt32(pushing: NC, "linear carry chunks"), flags: 0)
    }

    func groups(_ invocations: Int) -> (Int, Int, Int) {
        let groups = max(1, (invocations + 63) / 64)
        let x = min(groups, device.capabilities.maxWorkgroupCount[0])
        return (x, (groups + x - 1) / x, 1)
    }

    /// gcum, the chunk offsets, and column a of every row of `value` (exp of the shard's
    /// total log-gate; 1 without gates).
    func encodeDecay(_ stream: Stream, logGates: Tensor?, value: BufferSlice) throws {
        if let logGates {
            try stream.dispatch(kernel(mode: 0), bindings: [logGates.slice, gcum.whole, placeholder.whole, placeholder.whole, placeholder.whole],
                                push: push(), groups: groups(B * H * gatesPerHead * NC))
            try stream.barrier()
        }
        try stream.dispatch(kernel(mode: 1), bindings: [placeholder.whole, gcum.whole, off.whole, value, placeholder.whole],
                            push: push(), groups: groups(B * H * gatesPerHead))
        try stream.barrier()
    }

    /// o += (q exp(G)) S_in, S_in the b columns of `incoming` (after `encodeDecay`).
    func encodeCorrection(_ stream: Stream, q: Tensor, incoming: BufferSlice, output: Tensor) throws {
        try stream.dispatch(kernel(mode: 2), bindings: [q.slice, gcum.whole, off.whole, incoming, output.slice],
                            push: push(), groups: groups(B * L * H * Dv))
        try stream.barrier()
    }

    /// The b columns of `value` = sum_t (q_t exp(G_t))^T dO_t, the gradient of the shard's
    /// initial state from its own outputs (after `encodeDecay`).
    func encodeStateGradient(_ stream: Stream, q: Tensor, dOutput: Tensor, value: BufferSlice) throws {
        let partials = try device.makeBuffer(byteCount: B * H * NC * Dk * Dv * 4)
        try stream.dispatch(kernel(mode: 3), bindings: [q.slice, gcum.whole, off.whole, dOutput.slice, partials.whole],
                            push: push(), groups: groups(B * H * NC * Dk * Dv))
        try stream.barrier()
        try stream.dispatch(kernel(mode: 4), bindings: [placeholder.whole, gcum.whole, off.whole, value, partials.whole],
                            push: push(), groups: groups(B * H * Dk * Dv))
        try stream.barrier()
    }

    /// Copies a state [B, H, Dk, Dv] into the b columns of a value, or back.
    func pack(_ stream: Stream, state: BufferSlice, into value: BufferSlice) throws {
        try ParallelKernels.copyRows(from: state, to: value, rows: rows, width: Dv, sourceStride: Dv,
                                     destinationOffset: 1, destinationStride: width, on: stream)
        try stream.barrier()
    }

    func unpack(_ stream: Stream, value: BufferSlice, into state: BufferSlice) throws {
        try ParallelKernels.copyRows(from: value, to: state, rows: rows, width: Dv, sourceOffset: 1, sourceStride: width,
                                     destinationStride: Dv, on: stream)
        try stream.barrier()
    }
}
