import VulkanCompute

// Attention over an int8 K/V cache (`QuantizedTensor`: i8 values with an f32 scale per block
// of 32 elements of each row, `KVQuantization`'s layout). The scalar forward kernel reads the
// values four to a 32-bit word and scales each quad by its block's scale, so the device needs
// no 8-bit storage feature; results match attention over the dequantized cache.

extension FlashAttention {
    /// Decode against an int8 cache (see ``decode(q:kCache:vCache:layout:pages:splits:into:on:)-(Tensor,Tensor,Tensor,_,_,_,_,_)``).
    /// - Parameters:
    ///   - q: The query rows, f32, f16 or bf16: [B, Sq, Hq, Dk] or [totalQ, Hq, Dk].
    ///   - kCache: K quantized: values [B, Sk, Hkv, Dk] (or packed, or paged) and scales.
    ///   - vCache: V quantized, K's shape with Dv.
    ///   - layout: Dense, or packed with per-sequence query and cache lengths.
    ///   - pages: The block table of a paged cache; nil for a contiguous one.
    ///   - splits: Workgroup columns over the key range; nil lets the device decide.
    ///   - outputs: O (Q's type unless `outputDType`) and LSE to write; nil allocates them.
    ///   - stream: A stream of Q's device.
    /// - Returns: O, LSE and the path (`scalar-q<type>-kvi8 ...`).
    /// - Throws: ``VkAttnError`` as the unquantized decode, and for scales that do not fit.
    public func decode(q: Tensor, kCache: QuantizedTensor, vCache: QuantizedTensor, layout: AttentionLayout = .dense,
                       pages: KVPages? = nil, splits: Int? = nil, into outputs: AttentionOutput? = nil,
                       on stream: Stream) throws -> AttentionOutput {
        guard q.device === stream.device else { throw VkAttnError.deviceMismatch(op: "attention.decode", operand: "stream") }
        return try decodePlan(q: q, kCache: kCache, vCache: vCache, layout: layout, pages: pages, splits: splits)
            .encode(q: q, k: kCache, v: vCache, into: outputs, on: stream)
    }

    /// Plans decode against an int8 cache (see ``decodePlan(q:kCache:vCache:layout:pages:splits:)-(Tensor,Tensor,Tensor,_,_,_)``).
    /// - Parameters:
    ///   - q: A Q of the planned shape and type.
    ///   - kCache: K quantized.
    ///   - vCache: V quantized.
    ///   - layout: Dense or packed.
    ///   - pages: The block table of a paged cache; nil for a contiguous one.
    ///   - splits: Workgroup columns over the key range; nil lets the device decide.
    /// - Returns: The plan; encode it with ``AttentionPlan/encode(q:k:v:into:on:)-(_,QuantizedTensor,_,_,_)``.
    /// - Throws: ``VkAttnError`` as the unquantized plan.
    public func decodePlan(q: Tensor, kCache: QuantizedTensor, vCache: QuantizedTensor, layout: AttentionLayout = .dense,
                           pages: KVPages? = nil, splits: Int? = nil) throws -> AttentionPlan {
        try decodePlan(q: q, kCache: kCache.values, vCache: vCache.values, layout: layout, pages: pages, splits: splits,
                       scales: (kCache.scales, vCache.scales))
    }

    /// The forward over an int8 K and V (chunked prefill over a quantized cache).
    /// - Parameters:
    ///   - q: Q, f32, f16 or bf16.
    ///   - k: K quantized.
    ///   - v: V quantized.
    ///   - layout: Dense or packed.
    ///   - pages: The block table of K and V in pages; nil for contiguous ones.
    ///   - outputs: O and LSE to write; nil allocates them.
    ///   - stream: A stream of Q's device.
    /// - Returns: O, LSE and the path.
    /// - Throws: ``VkAttnError`` as the unquantized forward.
    public func forward(q: Tensor, k: QuantizedTensor, v: QuantizedTensor, layout: AttentionLayout = .dense,
                        pages: KVPages? = nil, into outputs: AttentionOutput? = nil, on stream: Stream) throws -> AttentionOutput {
        guard q.device === stream.device else { throw VkAttnError.deviceMismatch(op: "attention.forward", operand: "stream") }
        return try forwardPlan(q: q, k: k.values, v: v.values, layout: layout, pages: pages, scales: (k.scales, v.scales))
            .encode(q: q, k: k, v: v, into: outputs, on: stream)
    }
}

extension AttentionPlan {
    /// Records the planned pass over an int8 cache (a plan made for quantized K and V).
    /// - Parameters:
    ///   - q: Q of `qShape` and `inputType`.
    ///   - k: K quantized: values of `kvShape`, i8.
    ///   - v: V quantized: values of `vShape`, i8.
    ///   - outputs: O and LSE to write; nil allocates them.
    ///   - stream: A stream of the plan's device.
    /// - Returns: O, LSE and the plan's `path`.
    /// - Throws: ``VkAttnError`` naming the operand that is not what the plan was made for.
    public func encode(q: Tensor, k: QuantizedTensor, v: QuantizedTensor, into outputs: AttentionOutput? = nil,
                       on stream: Stream) throws -> AttentionOutput {
        try encode(q: q, k: k.values, v: v.values, scales: (k.scales, v.scales), into: outputs, on: stream)
    }
}
