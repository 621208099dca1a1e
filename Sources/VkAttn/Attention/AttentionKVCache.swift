import VulkanCompute

/// A K/V cache kept in fixed-size pages, as serving engines keep it (vLLM's PagedAttention):
/// K is [pages, pageSize, Hkv, Dk] and V [pages, pageSize, Hkv, Dv], and each sequence lists
/// the pages that hold its keys in order. Key j of sequence b sits at row j % pageSize of page
/// `blockTable[b * pagesPerSequence + j / pageSize]`. Sequence lengths come from the packed
/// layout's `cuSeqlensK` (the paged ops take packed layouts only); a sequence's unused table
/// entries are never read.
///
/// Paged and contiguous caches run the same kernels with the same tiles: results are identical.
public struct KVPages: Hashable, Sendable {
    /// Tokens per page.
    public var pageSize: Int
    /// Block-table entries per sequence (the longest sequence's page count, or more).
    public var pagesPerSequence: Int
    /// Page ids, [batch, pagesPerSequence] row-major.
    public var blockTable: [Int32]

    /// - Parameters:
    ///   - pageSize: Tokens per page (at least 1).
    ///   - pagesPerSequence: Table entries per sequence.
    ///   - blockTable: Page ids, [batch, pagesPerSequence] row-major.
    public init(pageSize: Int, pagesPerSequence: Int, blockTable: [Int32]) {
        self.pageSize = pageSize
        self.pagesPerSequence = pagesPerSequence
        self.blockTable = blockTable
    }

    /// Checks the table against `batch` sequences of `lengths` keys and a cache of `pageCount`
    /// pages; throws a `VkAttnError` naming `op`.
    func validate(op: String, lengths: [Int], pageCount: Int) throws {
        // The kernels take both as 32-bit push constants; 2^30 keeps every product in range.
        guard (1...(1 << 30)).contains(pageSize), (0...(1 << 30)).contains(pagesPerSequence) else {
            throw VkAttnError.invalidValue(op: op, operand: "pages", reason: "page size \(pageSize) must be in 1...2^30 and pages per sequence \(pagesPerSequence) in 0...2^30")
        }
        let (entries, overflow) = lengths.count.multipliedReportingOverflow(by: pagesPerSequence)
        guard !overflow, blockTable.count == entries else {
            throw VkAttnError.invalidValue(op: op, operand: "blockTable", reason: "has \(blockTable.count) entries; \(lengths.count) sequences x \(pagesPerSequence) pages expected")
        }
        for (b, length) in lengths.enumerated() {
            let needed = length / pageSize + (length % pageSize == 0 ? 0 : 1)
            guard needed <= pagesPerSequence else {
                throw VkAttnError.invalidValue(op: op, operand: "blockTable", reason: "sequence \(b) has \(length) keys, more than \(pagesPerSequence) pages of \(pageSize) hold")
            }
            for p in 0..<needed {
                let page = blockTable[b * pagesPerSequence + p]
                guard page >= 0, Int(page) < pageCount else {
                    throw VkAttnError.invalidValue(op: op, operand: "blockTable", reason: "sequence \(b)'s page \(p) is \(page), outside the cache's \(pageCount) pages")
                }
            }
        }
    }
}

/// The int8 scales of a quantized K/V cache (`KVQuantization`'s layout): one f32 per block of
/// 32 elements of each row, [..., ceil(D / 32)] beside K's (or V's) [..., D].
struct KVScales {
    let k: Tensor
    let v: Tensor
}

extension AttentionGeometry {
    /// Checks Q, K, V (any of the K/V storages the forward and decode read: Q's type, f16 or
    /// bf16 under any Q, int8 with `scales`, contiguous or in `pages`) and the layout.
    package static func resolveCache(op: String, q: Tensor, k: Tensor, v: Tensor, layout: AttentionLayout,
                                     scales: (k: Tensor, v: Tensor)?, pages: KVPages?) throws -> AttentionGeometry {
        let device = q.device
        for (name, t) in [("K", k), ("V", v)] where t.device !== device {
            throw VkAttnError.deviceMismatch(op: op, operand: name)
        }
        try checkQueryType(op: op, q)
        guard v.dtype == k.dtype else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "V", expected: k.dtype.rawValue, actual: v.dtype.rawValue)
        }
        let kvType = k.dtype
        guard kvType == q.dtype || kvType.isHalfWidth || kvType == .i8 else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "K", expected: "\(q.dtype), f16, bf16 or i8", actual: kvType.rawValue)
        }
        if kvType == .i8 && scales == nil {
            throw VkAttnError.invalidValue(op: op, operand: "K", reason: "is i8: a quantized cache needs its scales (pass a QuantizedTensor)")
        }
        if kvType != .i8 && scales != nil {
            throw VkAttnError.invalidValue(op: op, operand: "scales", reason: "given for a \(kvType) cache; only i8 caches have scales")
        }
        if kvType == .f16 && !(device.enabled.shaderFloat16 && device.enabled.storageBuffer16BitAccess) {
            throw VkAttnError.unsupported(op: op, reason: "f16 K/V need shaderFloat16 and storageBuffer16BitAccess, which \(device.label) lacks")
        }
        if kvType == .bf16 && !device.enabled.storageBuffer16BitAccess {
            throw VkAttnError.unsupported(op: op, reason: "bf16 K/V need storageBuffer16BitAccess, which \(device.label) lacks")
        }
        // The shapes: a paged cache resolves as the packed cache its pages spell out.
        var kShape = k.shape, vShape = v.shape
        var pageCount = 0
        if let pages {
            guard case let .packed(_, cuK) = layout else {
                throw VkAttnError.invalidValue(op: op, operand: "layout", reason: "a paged cache takes the packed layout (cuSeqlensK: each sequence's cached keys)")
            }
            for (name, shape) in [("K", k.shape), ("V", v.shape)] where shape.count != 4 || shape[1] != pages.pageSize || shape.contains(where: { $0 < 0 }) {
                throw VkAttnError.shapeMismatch(op: op, operand: name, expected: "[pages, \(pages.pageSize), heads, headDim]", actual: "\(shape)")
            }
            guard k.shape[0] == v.shape[0] else {
                throw VkAttnError.shapeMismatch(op: op, operand: "V", expected: "\(k.shape[0]) pages (as K)", actual: "\(v.shape)")
            }
            pageCount = k.shape[0]
            try checkCumulative(op: op, "cuSeqlensK", cuK, total: Int(cuK.last ?? 0))
            try pages.validate(op: op, lengths: zip(cuK.dropFirst(), cuK).map { Int($0 - $1) }, pageCount: pageCount)
            let tokens = Int(cuK.last ?? 0)
            kShape = [tokens, k.shape[2], k.shape[3]]
            vShape = [tokens, v.shape[2], v.shape[3]]
        }
        var g = try resolve(op: op, qShape: q.shape, kShape: kShape, vShape: vShape, dtype: q.dtype, layout: layout)
        g.kvDType = kvType
        g.pages = pages
        g.pageCount = pageCount
        if let scales {
            for (name, t, shape) in [("K scales", scales.k, g.kvShape), ("V scales", scales.v, g.vShape)] {
                try t.expect(op: op, name, shape: Array(shape.dropLast()) + [(shape[shape.count - 1] + 31) / 32], dtype: .f32, device: device)
                try t.expectBindable(op: op, name)
            }
        }
        for (name, t) in [("Q", q), ("K", k), ("V", v)] { try t.expectBindable(op: op, name) }
        return g
    }
}

// MARK: Appending tokens

extension KVPages {
    /// The op name `append` errors carry.
    public static let appendOpName = "kvCache.append"

    /// Writes new tokens' K (or V) rows into the pages after each sequence's cached tokens: new
    /// token t of sequence b lands at position `cachedLengths[b] + t`, row (position % pageSize)
    /// of page `blockTable[b * pagesPerSequence + position / pageSize]`. One copy command
    /// (a region per token), no kernel; nothing when there are no new tokens.
    /// - Parameters:
    ///   - rows: The new rows, packed [newTokens, Hkv, D], `cache`'s type.
    ///   - cuSeqlens: Cumulative new-token counts per sequence (batch + 1 entries, from 0).
    ///   - cache: The paged K or V: [pages, pageSize, Hkv, D].
    ///   - cachedLengths: Tokens each sequence already holds (the table must cover the new end).
    ///   - stream: A stream of the tensors' device.
    /// - Throws: ``VkAttnError`` for shapes, types or devices that do not match, a table that
    ///   does not cover the new positions, or a page id outside the cache.
    public func append(_ rows: Tensor, cuSeqlens: [Int32], into cache: Tensor, cachedLengths: [Int], on stream: Stream) throws {
        let op = Self.appendOpName
        try checkAppend(op: op, rows: rows, cuSeqlens: cuSeqlens, cache: cache, cachedLengths: cachedLengths, stream: stream)
        guard cache.dtype == rows.dtype else {
            throw VkAttnError.dtypeMismatch(op: op, operand: "rows", expected: cache.dtype.rawValue, actual: rows.dtype.rawValue)
        }
        let rowBytes = rows.shape[1] * rows.shape[2] * rows.dtype.byteSize
        try stream.copy(from: rows.buffer, to: cache.buffer,
                        regions: regions(cuSeqlens: cuSeqlens, cachedLengths: cachedLengths, rowBytes: rowBytes,
                                         source: rows.slice.offset, destination: cache.slice.offset))
    }

    /// `append` for an int8 cache: the new rows' values and scales (quantize them first with
    /// `KVQuantization.quantize`) go to the same positions of the cache's values and scales.
    /// - Parameters:
    ///   - rows: The new rows quantized: values [newTokens, Hkv, D].
    ///   - cuSeqlens: Cumulative new-token counts per sequence.
    ///   - cache: The paged, quantized K or V: values [pages, pageSize, Hkv, D].
    ///   - cachedLengths: Tokens each sequence already holds.
    ///   - stream: A stream of the tensors' device.
    /// - Throws: ``VkAttnError`` as the unquantized `append`.
    public func append(_ rows: QuantizedTensor, cuSeqlens: [Int32], into cache: QuantizedTensor, cachedLengths: [Int],
                       on stream: Stream) throws {
        let op = Self.appendOpName
        try checkAppend(op: op, rows: rows.values, cuSeqlens: cuSeqlens, cache: cache.values, cachedLengths: cachedLengths, stream: stream)
        for (from, to, width) in [(rows.values, cache.values, rows.rowWidth), (rows.scales, cache.scales, rows.blocksPerRow)] {
            let bytes = rows.values.shape[1] * width * from.dtype.byteSize
            try stream.copy(from: from.buffer, to: to.buffer,
                            regions: regions(cuSeqlens: cuSeqlens, cachedLengths: cachedLengths, rowBytes: bytes,
                                             source: from.slice.offset, destination: to.slice.offset))
        }
    }

    func checkAppend(op: String, rows: Tensor, cuSeqlens: [Int32], cache: Tensor, cachedLengths: [Int], stream: Stream) throws {
        for (name, t) in [("rows", rows), ("cache", cache)] where t.device !== stream.device {
            throw VkAttnError.deviceMismatch(op: op, operand: name)
        }
        guard cache.shape.count == 4, cache.shape[1] == pageSize else {
            throw VkAttnError.shapeMismatch(op: op, operand: "cache", expected: "[pages, \(pageSize), heads, headDim]", actual: "\(cache.shape)")
        }
        try AttentionGeometry.checkCumulative(op: op, "cuSeqlens", cuSeqlens, total: rows.shape.first ?? 0)
        guard rows.shape.count == 3, Array(rows.shape.dropFirst()) == Array(cache.shape.suffix(2)) else {
            throw VkAttnError.shapeMismatch(op: op, operand: "rows", expected: "[tokens, \(cache.shape[2]), \(cache.shape[3])]", actual: "\(rows.shape)")
        }
        guard cachedLengths.count == cuSeqlens.count - 1, cachedLengths.allSatisfy({ $0 >= 0 }) else {
            throw VkAttnError.invalidValue(op: op, operand: "cachedLengths", reason: "needs \(cuSeqlens.count - 1) counts of zero or more, got \(cachedLengths)")
        }
        let ends = zip(cachedLengths, zip(cuSeqlens.dropFirst(), cuSeqlens)).map { $0 + Int($1.0 - $1.1) }
        try validate(op: op, lengths: ends, pageCount: cache.shape[0])
    }

    func regions(cuSeqlens: [Int32], cachedLengths: [Int], rowBytes: Int, source: Int, destination: Int) -> [(source: Int, destination: Int, bytes: Int)] {
        var out: [(source: Int, destination: Int, bytes: Int)] = []
        for b in 0..<(cuSeqlens.count - 1) {
            for t in Int(cuSeqlens[b])..<Int(cuSeqlens[b + 1]) {
                let position = cachedLengths[b] + t - Int(cuSeqlens[b])
                let page = Int(blockTable[b * pagesPerSequence + position / pageSize])
                out.append((source + t * rowBytes, destination + (page * pageSize + position % pageSize) * rowBytes, rowBytes))
            }
        }
        return out
    }
}
