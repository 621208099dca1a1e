import VulkanCompute
import VkAttnShaders

/// Combines partial attention results computed over disjoint key sets of the same queries
/// into the exact result: LSE = log(sum exp(LSE_s)), O = sum exp(LSE_s - LSE) O_s. Used by
/// split-KV decode and by schedulers that split keys across devices (ring attention).
///
/// Partials are fp32, stacked along a leading split dimension: O_s [S, B, Sq, H, D] (dense)
/// or [S, totalQ, H, D] (packed), LSE_s [S, B, H, Sq] or [S, H, totalQ]. The result has the
/// shapes without the leading dimension; O may be f32 or f16. A row no partial saw (all
/// LSE_s = -inf) gets O = 0 and LSE = -inf.
public enum AttentionMerge {
    /// Records the merge of S partials.
    /// - Parameters:
    ///   - partialO: fp32 partial outputs: [S, B, Sq, H, D] or [S, totalQ, H, D]. Any size but
    ///     D may be zero: no kernel is recorded (with S = 0 and rows to write, fills write
    ///     O = 0 and LSE = -inf).
    ///   - partialLSE: fp32 partial LSEs: [S, B, H, Sq] or [S, H, totalQ].
    ///   - o: The merged output: partialO's shape without S; f32, f16 or bf16.
    ///   - lse: The merged LSE: partialLSE's shape without S; f32.
    ///   - stream: A stream of the tensors' device.
    /// - Throws: ``VkAttnError`` for a tensor on another device, a wrong shape or type, a head dim
    ///   the kernels do not take, or a tensor larger than one binding.
    public static func merge(partialO: Tensor, partialLSE: Tensor, into o: Tensor, lse: Tensor, on stream: Stream) throws {
        let op = "attention.merge"
        let device = stream.device
        for (name, t) in [("partialO", partialO), ("partialLSE", partialLSE), ("O", o), ("LSE", lse)] where t.device !== device {
            throw VkAttnError.deviceMismatch(op: op, operand: name)
        }
        guard partialO.dtype == .f32 else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "partialO", expected: "f32", actual: partialO.dtype.rawValue)
        }
        guard partialO.shape.count == 5 || partialO.shape.count == 4 else {
            throw VkAttnError.shapeMismatch(op: op, operand: "partialO", expected: "[splits, batch, seq, heads, headDim] or [splits, tokens, heads, headDim]", actual: "\(partialO.shape)")
        }
        let packed = partialO.shape.count == 4
        let splits = partialO.shape[0]
        let oShape = Array(partialO.shape.dropFirst())
        let d = oShape[oShape.count - 1], heads = oShape[oShape.count - 2]
        guard (1...AttentionGeometry.maxHeadDimV).contains(d) else {
            throw VkAttnError.invalidValue(op: op, operand: "headDim", reason: "\(d) is outside 1...\(AttentionGeometry.maxHeadDimV)")
        }
        let seq = packed ? oShape[0] : oShape[1]
        let lseShape = packed ? [heads, oShape[0]] : [oShape[0], heads, seq]
        try partialLSE.expect(op: op, "partialLSE", shape: [splits] + lseShape, dtype: .f32)
        try o.expect(op: op, "O", shape: oShape)
        guard o.dtype == .f32 || o.dtype.isHalfWidth else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "O", expected: "f32, f16 or bf16", actual: o.dtype.rawValue)
        }
        try lse.expect(op: op, "LSE", shape: lseShape, dtype: .f32)
        for (name, t) in [("partialO", partialO), ("partialLSE", partialLSE), ("O", o), ("LSE", lse)] {
            try t.expectBindable(op: op, name)
        }
        // No rows, or no partials to merge (splits = 0: every row saw no key, O = 0, LSE = -inf):
        // no kernel, only fills.
        if o.isEmpty || splits == 0 {
            try o.recordFill(bits: 0, on: stream)
            try lse.recordFill(bits: (-Float.infinity).bitPattern, on: stream)
            return
        }
        let totalQ = packed ? oShape[0] : oShape[0] * oShape[1]
        try encode(partialO: partialO.slice, partialLSE: partialLSE.slice, o: o, lse: lse, splits: splits,
                   headDim: d, heads: heads, seqQ: packed ? totalQ : seq, totalQ: totalQ, packed: packed, on: stream)
    }

    static func encode(partialO: BufferSlice, partialLSE: BufferSlice, o: Tensor, lse: Tensor,
                       splits: Int, headDim d: Int, heads: Int, seqQ: Int, totalQ: Int, packed: Bool,
                       sinks: BufferSlice? = nil, on stream: Stream) throws {
        let device = stream.device
        let tpr = AttentionTiling.threadsPerRow(device)
        let group = min(256, device.capabilities.maxWorkgroupInvocations) / tpr * tpr
        let rows = totalQ * heads
        let groups = (rows + group / tpr - 1) / (group / tpr)
        let gx = min(groups, device.capabilities.maxWorkgroupCount[0])
        // The merge reads the shared attention block: only its sizes and the split count matter.
        let push = AttentionParams(batch: 1, headsQ: UInt32(heads), headsKv: UInt32(heads), seqQ: UInt32(seqQ), seqK: 0,
                                   totalQ: UInt32(totalQ), scaleLog2: 0, softcap: 0, windowLeft: -1, windowRight: -1,
                                   splitKeys: 0, splits: UInt32(splits), maskBlock: 0, maskRows: 0, diagOffset: 0, topLeft: 0,
                                   pageSize: 0, tableStride: 0)
        let kernel = try device.kernel(KernelDescriptor(
            shader: o.dtype == .f16 ? Shaders.attentionMergeF16 : o.dtype == .bf16 ? Shaders.attentionMergeBf16 : Shaders.attentionMergeF32,
            bindings: 7,
            specialization: ["local_size_x": .int(group), "D": .int(d), "TPR": .int(tpr), "VARLEN": .bool(packed), "SINKS": .bool(sinks != nil)]))
        let dummy = try device.makeBuffer([Int32(0), 0, 0, 0]).whole
        // With sinks, head h's sink logit joins the merge as a partial whose O is zero.
        try stream.dispatch(kernel, bindings: [partialO, partialLSE, o.slice, lse.slice, dummy, dummy, sinks ?? dummy],
                            push: push, groups: (gx, (groups + gx - 1) / gx, 1))
    }
}
