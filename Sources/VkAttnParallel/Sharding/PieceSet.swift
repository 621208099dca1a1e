import VkAttn
/// The pieces of one rank (or of a group of ranks whose shards were gathered) with the row
/// where each starts in the local [tokens, heads, headDim] tensors.
struct PieceSet: Sendable {
    let pieces: [SequencePiece]
    let rowOffsets: [Int]
    let tokens: Int

    init(_ pieces: [SequencePiece]) {
        self.pieces = pieces
        var offsets: [Int] = []
        var row = 0
        for p in pieces {
            offsets.append(row)
            row += p.tokens
        }
        rowOffsets = offsets
        tokens = row
    }

    /// The concatenation of several ranks' piece sets (Ulysses gathers whole shards).
    init(concatenating sets: [PieceSet]) {
        self.init(sets.flatMap(\.pieces))
    }

    var maxPieceTokens: Int { pieces.map(\.tokens).max() ?? 0 }
}

extension Tensor {
    /// Rows `first ..< first + count` of a [rows, ...] tensor, as a view.
    func rows(_ first: Int, _ count: Int) throws -> Tensor {
        let rowElements = shape.dropFirst().reduce(1, *)
        return try Tensor(buffer, shape: [count] + shape.dropFirst(), dtype: dtype,
                          byteOffset: slice.offset + first * rowElements * dtype.byteSize)
    }

    /// The same bytes seen with another shape (same element count).
    func reshaped(_ newShape: [Int]) throws -> Tensor {
        try Tensor(buffer, shape: newShape, dtype: dtype, byteOffset: slice.offset)
    }

    /// Offset in 32-bit words of element 0 (for the word-based row copies).
    var wordOffset: Int { slice.offset / 4 }
}

/// Scratch memory of one rank call: tensors carved out of one buffer at aligned offsets.
enum ScratchArena {
    /// The aligned offsets of `shapes` in one buffer and the bytes that buffer needs.
    static func layout(_ device: Device, _ shapes: [(shape: [Int], dtype: DType)]) -> (offsets: [Int], byteCount: Int) {
        let alignment = max(256, device.capabilities.minStorageBufferOffsetAlignment)
        var offsets: [Int] = []
        var total = 0
        for s in shapes {
            offsets.append(total)
            let bytes = max(1, s.shape.reduce(1, *)) * s.dtype.byteSize
            total += (bytes + alignment - 1) / alignment * alignment
        }
        return (offsets, max(total, alignment))
    }

    /// Allocates `shapes` (each at an offset aligned for binding) in one buffer.
    static func allocate(_ device: Device, _ shapes: [(shape: [Int], dtype: DType)]) throws -> [Tensor] {
        let layout = layout(device, shapes)
        return try carve(try device.makeBuffer(byteCount: layout.byteCount), device, shapes)
    }

    /// `shapes` laid out as `allocate` lays them, in `buffer` (at least `layout`'s byte count):
    /// reused scratch whose shapes change from step to step.
    static func carve(_ buffer: Buffer, _ device: Device, _ shapes: [(shape: [Int], dtype: DType)]) throws -> [Tensor] {
        try zip(shapes, layout(device, shapes).offsets).map { try Tensor(buffer, shape: $0.0.shape, dtype: $0.0.dtype, byteOffset: $0.1) }
    }
}
