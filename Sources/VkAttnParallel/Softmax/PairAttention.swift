import VkAttn
/// Attention between the query pieces of a rank and one block of key pieces, as one
/// FlashAttention call per (query piece, key piece) pair that the mask does not skip, with
/// the sub-mask each pair's positions imply (or one call per sequence where the sequences'
/// sub-masks differ: "Masks across ranks" in docs/PARALLEL.md). Forward partials are merged
/// into fp32 running (O, LSE) with the exact LSE rule; backward partial gradients are summed
/// in fp32.
struct PairAttention {
    /// The user's options (mask, scale, softcap).
    let base: FlashAttention

    func call(_ mask: AttentionMask) -> FlashAttention {
        FlashAttention(mask: mask, scale: base.scale, softcap: base.softcap, outputDType: .f32)
    }

    /// Pairs of (query piece, key piece, relation) that attend (relation never `.skip`).
    func pairs(queries: PieceSet, keys: PieceSet) throws -> [(q: Int, k: Int, relation: PieceRelation)] {
        var out: [(Int, Int, PieceRelation)] = []
        for (a, qp) in queries.pieces.enumerated() where qp.tokens > 0 {
            for (c, kp) in keys.pieces.enumerated() where kp.tokens > 0 {
                let relation = try PieceRelation.between(query: qp, key: kp, mask: base.mask)
                if relation != .skip { out.append((a, c, relation)) }
            }
        }
        return out
    }

    /// Attention calls between `queries` and `keys`.
    func calls(queries: PieceSet, keys: PieceSet) throws -> Int {
        try pairs(queries: queries, keys: keys).reduce(0) { $0 + $1.relation.calls }
    }
}

/// Rows of one sequence inside a piece: where they start in the piece, and how many.
extension SequencePiece {
    func rows(of sequence: Int) -> (first: Int, count: Int) {
        (counts[..<sequence].reduce(0, +), counts[sequence])
    }
}

/// The fp32 running outputs of a rank's query pieces: O [tokens, Hq, D] (whole shard, piece
/// rows), one LSE [Hq, pieceTokens] per piece, and room for one partial.
final class QueryAccumulator {
    let set: PieceSet
    let o: Tensor
    let lse: [Tensor]
    let partialO: Tensor
    let partialLSE: Tensor
    /// One sequence's LSE [Hq, count] of a per-sequence call, before it joins `partialLSE`.
    let sequenceLSE: Tensor
    var initialized: [Bool]

    /// The scratch an accumulator of `set` takes (`ownsO`: O too).
    static func scratchShapes(set: PieceSet, headsQ: Int, headDim: Int, ownsO: Bool) -> [(shape: [Int], dtype: DType)] {
        let maxTokens = max(1, set.maxPieceTokens)
        var shapes: [(shape: [Int], dtype: DType)] = set.pieces.map { ([headsQ, max(1, $0.tokens)], .f32) }
        shapes.append(([maxTokens, headsQ, headDim], .f32))
        shapes.append(([headsQ, maxTokens], .f32))
        shapes.append(([headsQ, maxTokens], .f32))
        if ownsO { shapes.append(([max(1, set.tokens), headsQ, headDim], .f32)) }
        return shapes
    }

    /// `o`: an fp32 [tokens, Hq, D] tensor to accumulate into (the caller's output when it is
    /// fp32), or nil for scratch. `storage`: a buffer to carve the scratch from (reused from
    /// step to step on one stream), or nil for a buffer of its own.
    init(set: PieceSet, headsQ: Int, headDim: Int, o: Tensor?, device: Device, storage: Buffer? = nil) throws {
        self.set = set
        let shapes = Self.scratchShapes(set: set, headsQ: headsQ, headDim: headDim, ownsO: o == nil)
        let t = try storage.map { try ScratchArena.carve($0, device, shapes) } ?? ScratchArena.allocate(device, shapes)
        lse = Array(t[0..<set.pieces.count])
        partialO = t[set.pieces.count]
        partialLSE = t[set.pieces.count + 1]
        sequenceLSE = t[set.pieces.count + 2]
        self.o = o ?? t[set.pieces.count + 3]
        initialized = [Bool](repeating: false, count: set.pieces.count)
    }

    func oRows(_ piece: Int) throws -> Tensor { try o.rows(set.rowOffsets[piece], set.pieces[piece].tokens) }

    func reset() { initialized = initialized.map { _ in false } }

    /// Attention of every query piece against `keys` (K, V [keyTokens, Hkv, D] in the key
    /// set's row order), merged into the running outputs. Returns the calls made.
    @discardableResult
    func accumulate(_ pairs: PairAttention, q: Tensor, k: Tensor, v: Tensor, keys: PieceSet, on stream: Stream) throws -> Int {
        let plan = try pairs.pairs(queries: set, keys: keys)
        let heads = q.shape[1]
        for (a, c, relation) in plan {
            let qp = set.pieces[a], kp = keys.pieces[c]
            let qRow = set.rowOffsets[a], kRow = keys.rowOffsets[c]
            let po = try partialO.rows(0, qp.tokens)
            let pl = try Tensor(partialLSE.buffer, shape: [heads, qp.tokens], dtype: .f32, byteOffset: partialLSE.slice.offset)
            switch relation {
            case .skip:
                continue
            case let .attend(mask):
                let qView = try q.rows(qRow, qp.tokens)
                let kView = try k.rows(kRow, kp.tokens), vView = try v.rows(kRow, kp.tokens)
                let layout = AttentionLayout.packed(cuSeqlensQ: qp.cuSeqlens, cuSeqlensK: kp.cuSeqlens)
                if !initialized[a] {
                    _ = try pairs.call(mask).forward(q: qView, k: kView, v: vView, layout: layout,
                                                     into: AttentionOutput(o: try oRows(a), lse: lse[a]), on: stream)
                    initialized[a] = true
                    try stream.barrier()
                    continue
                }
                _ = try pairs.call(mask).forward(q: qView, k: kView, v: vView, layout: layout, into: AttentionOutput(o: po, lse: pl), on: stream)
            case let .perSequence(list):
                // Rows of sequences without a call keep O = 0, LSE = -inf: the merge leaves them as they were.
                try stream.fill(po.slice, word: 0)
                try stream.fill(pl.slice, word: (-Float.infinity).bitPattern)
                try stream.barrier()
                for call in list {
                    let (qFirst, sq) = qp.rows(of: call.sequence), (kFirst, sk) = kp.rows(of: call.sequence)
                    let sl = try Tensor(sequenceLSE.buffer, shape: [heads, sq], dtype: .f32, byteOffset: sequenceLSE.slice.offset)
                    _ = try pairs.call(call.mask).forward(q: try q.rows(qRow + qFirst, sq), k: try k.rows(kRow + kFirst, sk),
                                                          v: try v.rows(kRow + kFirst, sk),
                                                          layout: .packed(cuSeqlensQ: [0, Int32(sq)], cuSeqlensK: [0, Int32(sk)]),
                                                          into: AttentionOutput(o: try po.rows(qFirst, sq), lse: sl), on: stream)
                    try stream.barrier()
                    try ParallelKernels.copyRows(from: sl.slice, to: pl.slice, rows: heads, width: sq, sourceStride: sq,
                                                 destinationOffset: qFirst, destinationStride: qp.tokens, on: stream)
                    try stream.barrier()
                }
                if !initialized[a] {
                    try stream.fill(try oRows(a).slice, word: 0)
                    try stream.fill(lse[a].slice, word: (-Float.infinity).bitPattern)
                    initialized[a] = true
                }
            }
            try stream.barrier()
            try ParallelKernels.mergeInto(stream, accO: try oRows(a).slice, accLSE: lse[a].slice, partO: po.slice, partLSE: pl.slice,
                                          tokens: qp.tokens, heads: heads, headDim: q.shape[2])
            try stream.barrier()
        }
        return plan.reduce(0) { $0 + $1.relation.calls }
    }

    /// Pieces no key reached get O = 0, LSE = -inf (rows that see no key).
    func finishUnreached(on stream: Stream) throws {
        for (a, done) in initialized.enumerated() where !done && set.pieces[a].tokens > 0 {
            try stream.fill(try oRows(a).slice, word: 0)
            try stream.fill(lse[a].slice, word: (-Float.infinity).bitPattern)
        }
        try stream.barrier()
    }

    /// Writes the per-piece LSE into `lse` ([Hq, tokens] of the whole shard; `headOffset`
    /// rows down when the shard's heads are a slice of more).
    func copyLSE(into target: Tensor, headOffset: Int = 0, on stream: Stream) throws {
        let heads = lse.first?.shape[0] ?? 0
        let total = target.shape[1]
        for (a, piece) in set.pieces.enumerated() where piece.tokens > 0 {
            try ParallelKernels.copyRows(from: lse[a].slice, to: target.slice, rows: heads, width: piece.tokens,
                                         sourceStride: piece.tokens,
                                         destinationOffset: headOffset * total + set.rowOffsets[a], destinationStride: total, on: stream)
        }
    }
}

/// fp32 gradient sums for the backward: dQ of the query pieces, and a dK/dV target for the
/// current key block; the first contribution to a piece writes, later ones add.
final class GradientAccumulator {
    let set: PieceSet
    let dq: Tensor
    var dqStarted: [Bool]
    let tmpDQ: Tensor
    let tmpDK: Tensor
    let tmpDV: Tensor
    /// One sequence's LSE [Hq, count] for a per-sequence call.
    let sequenceLSE: Tensor

    /// The scratch an accumulator of `set` takes (`ownsDQ`: dQ too).
    static func scratchShapes(set: PieceSet, headsQ: Int, headsKV: Int, headDim: Int, maxKeyPieceTokens: Int,
                              ownsDQ: Bool) -> [(shape: [Int], dtype: DType)] {
        var shapes: [(shape: [Int], dtype: DType)] = [
            ([max(1, set.maxPieceTokens), headsQ, headDim], .f32),
            ([max(1, maxKeyPieceTokens), headsKV, headDim], .f32),
            ([max(1, maxKeyPieceTokens), headsKV, headDim], .f32),
            ([headsQ, max(1, set.maxPieceTokens)], .f32)]
        if ownsDQ { shapes.append(([max(1, set.tokens), headsQ, headDim], .f32)) }
        return shapes
    }

    /// `storage`: a buffer to carve the scratch from (reused from step to step on one
    /// stream), or nil for a buffer of its own.
    init(set: PieceSet, headsQ: Int, headsKV: Int, headDim: Int, maxKeyPieceTokens: Int, dq: Tensor?, device: Device,
         storage: Buffer? = nil) throws {
        self.set = set
        let shapes = Self.scratchShapes(set: set, headsQ: headsQ, headsKV: headsKV, headDim: headDim,
                                        maxKeyPieceTokens: maxKeyPieceTokens, ownsDQ: dq == nil)
        let t = try storage.map { try ScratchArena.carve($0, device, shapes) } ?? ScratchArena.allocate(device, shapes)
        tmpDQ = t[0]
        tmpDK = t[1]
        tmpDV = t[2]
        sequenceLSE = t[3]
        self.dq = dq ?? t[4]
        dqStarted = [Bool](repeating: false, count: set.pieces.count)
    }

    /// Backward of every attending (query piece, key piece) pair against one key block:
    /// dQ into the running sums, dK/dV into `dk`/`dv` ([keyTokens, Hkv, D] fp32 in the key
    /// set's order), whose pieces `keyStarted` marks as already holding a sum.
    func accumulate(_ pairs: PairAttention, q: Tensor, o: Tensor, dO: Tensor, lse: [Tensor], k: Tensor, v: Tensor, keys: PieceSet,
                    dk: Tensor, dv: Tensor, keyStarted: inout [Bool], on stream: Stream) throws {
        for (a, c, relation) in try pairs.pairs(queries: set, keys: keys) {
            let qp = set.pieces[a], kp = keys.pieces[c]
            let qRows = set.rowOffsets[a], kRows = keys.rowOffsets[c]
            switch relation {
            case .skip:
                continue
            case let .attend(mask):
                let layout = AttentionLayout.packed(cuSeqlensQ: qp.cuSeqlens, cuSeqlensK: kp.cuSeqlens)
                let dqTarget = dqStarted[a] ? try tmpDQ.rows(0, qp.tokens) : try dq.rows(qRows, qp.tokens)
                let dkTarget = keyStarted[c] ? try tmpDK.rows(0, kp.tokens) : try dk.rows(kRows, kp.tokens)
                let dvTarget = keyStarted[c] ? try tmpDV.rows(0, kp.tokens) : try dv.rows(kRows, kp.tokens)
                _ = try pairs.call(mask).backward(q: try q.rows(qRows, qp.tokens), k: try k.rows(kRows, kp.tokens), v: try v.rows(kRows, kp.tokens),
                                                  o: try o.rows(qRows, qp.tokens), lse: lse[a], dO: try dO.rows(qRows, qp.tokens),
                                                  layout: layout, gradientDType: .f32,
                                                  into: AttentionGradients(dq: dqTarget, dk: dkTarget, dv: dvTarget), on: stream)
                try stream.barrier()
                if dqStarted[a] { try Self.add(dqTarget, into: try dq.rows(qRows, qp.tokens), on: stream) }
                if keyStarted[c] {
                    try Self.add(dkTarget, into: try dk.rows(kRows, kp.tokens), on: stream)
                    try Self.add(dvTarget, into: try dv.rows(kRows, kp.tokens), on: stream)
                }
                if dqStarted[a] || keyStarted[c] { try stream.barrier() }
            case let .perSequence(list):
                // Each sequence's call adds into sums that start at 0 (rows of other sequences untouched).
                if !dqStarted[a] { try stream.fill(try dq.rows(qRows, qp.tokens).slice, word: 0) }
                if !keyStarted[c] {
                    try stream.fill(try dk.rows(kRows, kp.tokens).slice, word: 0)
                    try stream.fill(try dv.rows(kRows, kp.tokens).slice, word: 0)
                }
                try stream.barrier()
                let heads = q.shape[1]
                for call in list {
                    let (qFirst, sq) = qp.rows(of: call.sequence), (kFirst, sk) = kp.rows(of: call.sequence)
                    let sl = try Tensor(sequenceLSE.buffer, shape: [heads, sq], dtype: .f32, byteOffset: sequenceLSE.slice.offset)
                    try ParallelKernels.copyRows(from: lse[a].slice, to: sl.slice, rows: heads, width: sq, sourceOffset: qFirst,
                                                 sourceStride: qp.tokens, destinationStride: sq, on: stream)
                    try stream.barrier()
                    let targets = AttentionGradients(dq: try tmpDQ.rows(0, sq), dk: try tmpDK.rows(0, sk), dv: try tmpDV.rows(0, sk))
                    _ = try pairs.call(call.mask).backward(q: try q.rows(qRows + qFirst, sq), k: try k.rows(kRows + kFirst, sk),
                                                           v: try v.rows(kRows + kFirst, sk), o: try o.rows(qRows + qFirst, sq), lse: sl,
                                                           dO: try dO.rows(qRows + qFirst, sq),
                                                           layout: .packed(cuSeqlensQ: [0, Int32(sq)], cuSeqlensK: [0, Int32(sk)]),
                                                           gradientDType: .f32, into: targets, on: stream)
                    try stream.barrier()
                    try Self.add(targets.dq, into: try dq.rows(qRows + qFirst, sq), on: stream)
                    try Self.add(targets.dk, into: try dk.rows(kRows + kFirst, sk), on: stream)
                    try Self.add(targets.dv, into: try dv.rows(kRows + kFirst, sk), on: stream)
                    try stream.barrier()
                }
            }
            dqStarted[a] = true
            keyStarted[c] = true
        }
    }

    /// Zeros for the dQ of pieces no pair reached.
    func finishUnreached(on stream: Stream) throws {
        for (a, done) in dqStarted.enumerated() where !done && set.pieces[a].tokens > 0 {
            try stream.fill(try dq.rows(set.rowOffsets[a], set.pieces[a].tokens).slice, word: 0)
        }
    }

    /// Zeros for the dK/dV pieces of a key block that no pair reached.
    static func finishUnreached(keys: PieceSet, dk: Tensor, dv: Tensor, started: [Bool], on stream: Stream) throws {
        for (c, done) in started.enumerated() where !done && keys.pieces[c].tokens > 0 {
            try stream.fill(try dk.rows(keys.rowOffsets[c], keys.pieces[c].tokens).slice, word: 0)
            try stream.fill(try dv.rows(keys.rowOffsets[c], keys.pieces[c].tokens).slice, word: 0)
        }
    }

    /// target += source (fp32 tensors of equal size).
    static func add(_ source: Tensor, into target: Tensor, on stream: Stream) throws {
        try ParallelKernels.copyRows(from: source.slice, to: target.slice, rows: 1, width: source.elementCount,
                                     sourceStride: 0, destinationStride: 0, accumulate: true, on: stream)
    }
}
