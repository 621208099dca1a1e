import Testing
import VkAttn
import TestSupport

/// Zero-sized inputs (issue #17, item 5): every op takes them, throws nothing, records no
/// kernel (`Stream.dispatchesRecorded` stays 0) and leaves empty or identity outputs; the few
/// outputs that are not empty even so are written by fills or copies, counted here too.
@Suite("Zero-sized inputs")
struct EmptyInputTests {
    /// Checks that `stream` recorded no dispatch, and exactly `fills` fills and `copies` copies.
    static func expectRecorded(_ stream: VkAttn.Stream, fills: Int = 0, copies: Int = 0, _ what: String,
                               sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(stream.dispatchesRecorded == 0, "\(what): \(stream.dispatchesRecorded) dispatches", sourceLocation: sourceLocation)
        #expect(stream.fillsRecorded == fills, "\(what): \(stream.fillsRecorded) fills, expected \(fills)", sourceLocation: sourceLocation)
        #expect(stream.copiesRecorded == copies, "\(what): \(stream.copiesRecorded) copies, expected \(copies)", sourceLocation: sourceLocation)
    }

    static let nan = Float.nan

    @Test func buffersAndTensorsMayBeEmpty() throws {
        try withDevice { device in
            let buffer = try device.makeBuffer(byteCount: 0)
            #expect(buffer.byteCount == 0 && buffer.whole.byteCount == 0)
            let fromValues = try device.makeBuffer([Float]())
            #expect(fromValues.byteCount == 0)
            #expect(try buffer.read(Float.self, count: 0) == [])
            try buffer.write([Float]())
            let end = try device.makeBuffer(byteCount: 64)
            #expect(try end.slice(offset: 64, byteCount: 0).byteCount == 0)
            #expect(throws: VulkanError.self) { _ = try end.slice(offset: 65, byteCount: 0) }
            #expect(throws: VulkanError.self) { _ = try device.makeBuffer(byteCount: -1) }
            for shape in [[0], [0, 4], [3, 0, 2], [2, 3, 0]] {
                for dtype in DType.allCases {
                    let t = try device.makeTensor(shape: shape, dtype: dtype)
                    #expect(t.elementCount == 0 && t.byteCount == 0 && t.isEmpty, "\(shape) \(dtype)")
                    #expect(try t.readFloats() == [])
                    try t.write(floats: [])
                }
            }
            let viewed = try Tensor(end, shape: [0, 4], dtype: .f32, byteOffset: 16)
            #expect(viewed.byteCount == 0)
            #expect(try device.makeTensor([], shape: [0], dtype: .f32).isEmpty)
            #expect(throws: VkAttnError.self) { _ = try device.makeTensor(shape: [-1, 4], dtype: .f32) }
        }
    }

    @Test func copiesAndFillsOfNothingRecordNothing() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let empty = try device.makeBuffer(byteCount: 0)
            let other = try device.makeBuffer([Float](repeating: 7, count: 4))
            let emptyTail = try other.slice(offset: 16, byteCount: 0)
            try stream.copy(from: empty.whole, to: emptyTail)
            try stream.fill(empty.whole, word: 1)
            try ShaderCopy().encode(from: empty.whole, to: emptyTail, on: stream)
            try ShaderFill.encode(empty.whole, value: Float(1), on: stream)
            try ShaderFill.encode(emptyTail, value: UInt32(1), on: stream)
            #expect(throws: VulkanError.self) { try ShaderCopy().encode(from: empty.whole, to: other.whole, on: stream) }
            try stream.synchronize()
            Self.expectRecorded(stream, "copy and fill")
            #expect(try other.read(Float.self, count: 4) == [7, 7, 7, 7])
        }
    }

    @Test func anEmptyTensorCanBeBound() throws {
        // A dispatch that binds an empty tensor (its buffer's first bytes) is valid Vulkan; the
        // kernel is told the size and touches nothing.
        try withDevice { device in
            let stream = try device.makeStream()
            let empty = try device.makeTensor(shape: [0], dtype: .f32)
            let target = try device.makeBuffer([Float](repeating: 3, count: 8))
            try ShaderCopy().encode(from: target.slice(offset: 0, byteCount: 16), to: target.slice(offset: 16, byteCount: 16), on: stream)
            #expect(stream.dispatchesRecorded == 1)
            let kernel = try device.kernel(KernelDescriptor(shader: Shaders.memoryFillF32, bindings: 2, specialization: ["local_size_x": .int(64)]))
            try stream.dispatch(kernel, bindings: [empty.slice, empty.slice], push: EmptyFillPush(count: 0, value: 1), groups: (1, 1, 1))
            try stream.synchronize()
            #expect(stream.dispatchesRecorded == 2)
            #expect(try target.read(Float.self, count: 8) == [Float](repeating: 3, count: 8))
        }
    }

    @Test func scansOfNothing() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            for algorithm in ScanAlgorithm.allCases {
                for exclusive in [false, true] {
                    for (shape, dtype) in [([0], DType.u32), ([0], .f32), ([4, 0], .i32), ([0, 16], .f32)] {
                        let x = try device.makeTensor(shape: shape, dtype: dtype)
                        let y = try device.makeTensor(shape: shape, dtype: dtype)
                        let d = try PrefixScan(exclusive: exclusive, algorithm: algorithm).encode(input: x, output: y, on: stream)
                        #expect(d.tiles == 0 && d.chunks == 0)
                    }
                }
                let x = try device.makeTensor(shape: [0], dtype: .f32)
                let flags = try device.makeTensor(shape: [0], dtype: .u32)
                try PrefixScan(algorithm: algorithm).encode(input: x, output: x, segments: .headFlags(flags), on: stream)
                let offsets = try device.makeTensor(shape: [0], dtype: .i32)
                try PrefixScan(algorithm: algorithm).encode(input: x, output: x, segments: .offsets(offsets), on: stream)
            }
            Self.expectRecorded(stream, "empty scans")

            // The exclusive scan with its total over nothing is [identity]: row pointers [0].
            let pointers = try device.makeTensor([Self.nan], shape: [1], dtype: .f32)
            let counts = try device.makeBuffer([UInt32](repeating: 9, count: 2))
            let words = try device.makeBuffer([UInt32](repeating: 9, count: 2))
            let maxima = try device.makeTensor([Self.nan], shape: [1], dtype: .f32)
            let total = try PrefixScan(exclusive: true).encode(input: device.makeTensor(shape: [0], dtype: .f32), output: pointers, on: stream)
            try PrefixScan(exclusive: true).encode(input: counts.slice(offset: 0, byteCount: 0), output: words.slice(offset: 4, byteCount: 4),
                                                   count: 0, dtype: .u32, on: stream)
            try PrefixScan(op: .max, exclusive: true).encode(input: device.makeTensor(shape: [0], dtype: .f32), output: maxima, on: stream)
            try stream.synchronize()
            Self.expectRecorded(stream, fills: 3, "exclusive scans with their total")
            #expect(try pointers.readFloats() == [0])
            #expect(try words.read(UInt32.self, count: 2) == [9, 0])
            #expect(try maxima.readFloats() == [-.infinity])
            #expect(try total.fallbacks() == 0)

            // Still checked: a wrong output shape or type is an error.
            let x = try device.makeTensor(shape: [0], dtype: .f32)
            #expect(throws: VkAttnError.self) { try PrefixScan().encode(input: x, output: device.makeTensor(shape: [1], dtype: .f32), on: stream) }
            #expect(throws: VkAttnError.self) { try PrefixScan().encode(input: x, output: device.makeTensor(shape: [0], dtype: .u32), on: stream) }
            #expect(throws: VkAttnError.self) {
                try PrefixScan(op: .max).encode(input: device.makeTensor(shape: [0], dtype: .u32), output: device.makeTensor(shape: [0], dtype: .u32), on: stream)
            }
            #expect(throws: VkAttnError.self) { try PrefixScan().encode(input: counts.whole, output: words.whole, count: -1, dtype: .u32, on: stream) }
        }
    }

    @Test func recurrencesOfNoSteps() throws {
        try withDevice { device in
            for layout in [LinearRecurrence.Layout.bld, .bdl] {
                for complex in [false, true] {
                    let stream = try device.makeStream()
                    let c = complex ? [2] : []
                    let (B, D) = (2, 3)
                    let shape = (layout == .bld ? [B, 0, D] : [B, D, 0]) + c
                    let a = try device.makeTensor(shape: shape, dtype: .f32)
                    let h = try device.makeTensor(shape: shape, dtype: .f32)
                    let stateCount = B * D * (complex ? 2 : 1)
                    let h0Values = (0..<stateCount).map { Float($0) + 0.5 }
                    let h0 = try device.makeTensor(h0Values, shape: [B, D] + c)
                    let final = try device.makeTensor([Float](repeating: .nan, count: stateCount), shape: [B, D] + c)
                    let op = LinearRecurrence(layout: layout, complex: complex)
                    let d = try op.forward(a: a, b: a, h0: h0, h: h, finalState: final, on: stream)
                    #expect(d.chunks == 0)
                    let zeroFinal = try device.makeTensor([Float](repeating: .nan, count: stateCount), shape: [B, D] + c)
                    try op.forward(a: a, b: a, h: h, finalState: zeroFinal, on: stream)
                    // Backward: dh0 = dFinal (or zero), da and db empty.
                    let dh0 = try device.makeTensor([Float](repeating: .nan, count: stateCount), shape: [B, D] + c)
                    try op.backward(a: a, h: h, h0: h0, dh: a, dFinal: h0, da: h, db: device.makeTensor(shape: shape, dtype: .f32), dh0: dh0, on: stream)
                    // No batch or no channels: everything empty.
                    let none = try device.makeTensor(shape: (layout == .bld ? [0, 5, D] : [0, D, 5]) + c, dtype: .f32)
                    try op.forward(a: none, b: none, h0: device.makeTensor(shape: [0, D] + c, dtype: .f32), h: device.makeTensor(shape: none.shape, dtype: .f32),
                                   finalState: device.makeTensor(shape: [0, D] + c, dtype: .f32), on: stream)
                    try stream.synchronize()
                    Self.expectRecorded(stream, fills: 1, copies: 2, "recurrence \(layout) complex \(complex)")
                    #expect(try final.readFloats() == h0Values)
                    #expect(try zeroFinal.readFloats() == [Float](repeating: 0, count: stateCount))
                    #expect(try dh0.readFloats() == h0Values)
                    #expect(throws: VkAttnError.self) { try op.forward(a: a, b: a, h0: final, h: h0, on: stream) }
                }
            }
        }
    }

    @Test(arguments: [GatedLinearAttention.Gating.none, .perHead, .perKey])
    func gatedLinearAttentionOfNoSteps(gating: GatedLinearAttention.Gating) throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let (B, H, Dk, Dv) = (1, 2, 4, 3)
            let op = GatedLinearAttention(gating: gating)
            func gates(_ L: Int, _ dk: Int) throws -> Tensor? {
                switch gating {
                case .none: return nil
                case .perHead: return try device.makeTensor(shape: [B, L, H], dtype: .f32)
                case .perKey: return try device.makeTensor(shape: [B, L, H, dk], dtype: .f32)
                }
            }
            let stateCount = B * H * Dk * Dv
            let s0Values = (0..<stateCount).map { Float($0) - 3 }
            let s0 = try device.makeTensor(s0Values, shape: [B, H, Dk, Dv])
            // L = 0: o empty, every state the initial one.
            let q = try device.makeTensor(shape: [B, 0, H, Dk], dtype: .f32)
            let v = try device.makeTensor(shape: [B, 0, H, Dv], dtype: .f32)
            let o = try device.makeTensor(shape: [B, 0, H, Dv], dtype: .f32)
            let final = try device.makeTensor([Float](repeating: .nan, count: stateCount), shape: [B, H, Dk, Dv])
            let chunkStates = try device.makeTensor([Float](repeating: .nan, count: stateCount), shape: [B, H, 1, Dk, Dv])
            let d = try op.forward(q: q, k: q, v: v, logGates: gates(0, Dk), initialState: s0, output: o, finalState: final,
                                   chunkStates: chunkStates, on: stream)
            #expect(d.chunks == 0 && d.path.hasPrefix("empty"))
            let zeroFinal = try device.makeTensor([Float](repeating: .nan, count: stateCount), shape: [B, H, Dk, Dv])
            try op.forward(q: q, k: q, v: v, logGates: gates(0, Dk), output: o, finalState: zeroFinal, on: stream)
            let dS0 = try device.makeTensor([Float](repeating: .nan, count: stateCount), shape: [B, H, Dk, Dv])
            try op.backward(q: q, k: q, v: v, logGates: gates(0, Dk), initialState: s0, dOutput: o, dFinalState: s0,
                            dq: q, dk: device.makeTensor(shape: q.shape, dtype: .f32), dv: device.makeTensor(shape: v.shape, dtype: .f32),
                            dLogGates: gates(0, Dk), dInitialState: dS0, on: stream)
            // Dk = 0 with L > 0: o = q S = 0 (a fill); dv and per-head gate gradients zero too.
            let L = 5
            let q0 = try device.makeTensor(shape: [B, L, H, 0], dtype: .f32)
            let v5Values = [Float](repeating: 1, count: B * L * H * Dv)
            let v5 = try device.makeTensor(v5Values, shape: [B, L, H, Dv])
            let o5 = try device.makeTensor([Float](repeating: .nan, count: v5Values.count), shape: [B, L, H, Dv])
            try op.forward(q: q0, k: q0, v: v5, logGates: gates(L, 0), output: o5, on: stream)
            let dv5 = try device.makeTensor([Float](repeating: .nan, count: v5Values.count), shape: [B, L, H, Dv])
            let dg = try gates(L, 0)
            if let dg, !dg.isEmpty { try dg.write(floats: [Float](repeating: .nan, count: dg.elementCount)) }
            try op.backward(q: q0, k: q0, v: v5, logGates: gates(L, 0), dOutput: v5, dq: q0, dk: device.makeTensor(shape: q0.shape, dtype: .f32),
                            dv: dv5, dLogGates: dg, on: stream)
            try stream.synchronize()
            let gateFills = gating == .perHead ? 1 : 0
            Self.expectRecorded(stream, fills: 1 + 2 + gateFills, copies: 3, "GLA \(gating)")
            #expect(try final.readFloats() == s0Values)
            #expect(try chunkStates.readFloats() == s0Values)
            #expect(try zeroFinal.readFloats() == [Float](repeating: 0, count: stateCount))
            #expect(try dS0.readFloats() == s0Values)
            #expect(try o5.readFloats() == [Float](repeating: 0, count: v5Values.count))
            #expect(try dv5.readFloats() == [Float](repeating: 0, count: v5Values.count))
            if let dg, !dg.isEmpty { #expect(try dg.readFloats() == [Float](repeating: 0, count: dg.elementCount)) }
        }
    }

    @Test func sparseOpsWithNoRowsColumnsOrNonzeros() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            // A matrix with no rows: row pointers [0].
            let noRows = try device.makeCSR(CSRArrays(rows: 0, cols: 5, rowOffsets: [0], columnIndices: [], values: []))
            #expect(try noRows.read().rowOffsets == [0])
            let noCols = try device.makeCSR(CSRArrays(rows: 4, cols: 0, rowOffsets: [0, 0, 0, 0, 0], columnIndices: [], values: []))
            let noNonzeros = try device.makeCSR(CSRArrays(rows: 3, cols: 2, rowOffsets: [0, 0, 0, 0], columnIndices: [], values: []))
            let emptyArrays = try CSRMatrix(rows: 2, cols: 2, nnz: 0, rowOffsets: device.makeTensor([0, 0, 0], shape: [3], dtype: .i32),
                                            columnIndices: device.makeTensor(shape: [0], dtype: .i32),
                                            values: device.makeTensor(shape: [0], dtype: .f32))
            #expect(throws: VkAttnError.self) {
                _ = try device.makeCSR(CSRArrays(rows: 0, cols: 5, rowOffsets: [1], columnIndices: [0], values: [1]))
            }

            // SpMM: C empty (no rows, n = 0) records nothing; no nonzeros gives C = beta C.
            for kernel in SpMMKernel.allCases {
                let options = SpMMOptions(kernel: kernel)
                try SpMMPlan(noRows, n: 4, options: options).encode(b: device.makeTensor(shape: [5, 4], dtype: .f32),
                                                                    c: device.makeTensor(shape: [0, 4], dtype: .f32), on: stream)
                try SpMMPlan(noNonzeros, n: 0, options: options).encode(b: device.makeTensor(shape: [2, 0], dtype: .f32),
                                                                        c: device.makeTensor(shape: [3, 0], dtype: .f32), on: stream)
            }
            let c = try device.makeTensor([Float](repeating: 2, count: 12), shape: [4, 3])
            try SpMMPlan(noCols, n: 3).encode(b: device.makeTensor(shape: [0, 3], dtype: .f32), c: c, beta: 1, on: stream)
            let cZero = try device.makeTensor([Float](repeating: .nan, count: 9), shape: [3, 3])
            try SpMMPlan(noNonzeros, n: 3).encode(b: device.makeTensor(shape: [2, 3], dtype: .f32), c: cZero, on: stream)
            try SpMMPlan(emptyArrays, n: 2).encode(b: device.makeTensor(shape: [2, 2], dtype: .f32), c: device.makeTensor(shape: [2, 2], dtype: .f32),
                                                   beta: 1, on: stream)

            // SDDMM: no nonzeros records nothing; k = 0 makes every sampled product 0.
            try SDDMMPlan(noRows, k: 4).encode(x: device.makeTensor(shape: [0, 4], dtype: .f32), y: device.makeTensor(shape: [5, 4], dtype: .f32),
                                               out: device.makeTensor(shape: [1], dtype: .f32), on: stream)
            try SDDMMPlan(emptyArrays, k: 4).encode(x: device.makeTensor(shape: [2, 4], dtype: .f32), y: device.makeTensor(shape: [2, 4], dtype: .f32),
                                                    out: device.makeTensor(shape: [0], dtype: .f32), on: stream)
            let pattern = try device.makeCSR(CSRArrays(rows: 2, cols: 2, rowOffsets: [0, 1, 2], columnIndices: [1, 0], values: [1, 1]))
            let sampled = try device.makeTensor([Self.nan, Self.nan], shape: [2])
            try SDDMMPlan(pattern, k: 0).encode(x: device.makeTensor(shape: [2, 0], dtype: .f32), y: device.makeTensor(shape: [2, 0], dtype: .f32),
                                                out: sampled, on: stream)

            // Block-CSR: the same rules.
            let bsrNoRows = try device.makeBSR(BSRArrays(blockSize: 16, blockRows: 0, blockCols: 2, blockRowOffsets: [0], blockColumnIndices: [], values: []))
            try BSRSpMMPlan(bsrNoRows, n: 8).encode(b: device.makeTensor(shape: [32, 8], dtype: .f32), c: device.makeTensor(shape: [0, 8], dtype: .f32), on: stream)
            let bsrNoBlocks = try device.makeBSR(BSRArrays(blockSize: 16, blockRows: 1, blockCols: 1, blockRowOffsets: [0, 0], blockColumnIndices: [], values: []))
            try BSRSpMMPlan(bsrNoBlocks, n: 0).encode(b: device.makeTensor(shape: [16, 0], dtype: .f32), c: device.makeTensor(shape: [16, 0], dtype: .f32), on: stream)
            let bsrC = try device.makeTensor([Float](repeating: .nan, count: 16 * 4), shape: [16, 4])
            try BSRSpMMPlan(bsrNoBlocks, n: 4).encode(b: device.makeTensor(shape: [16, 4], dtype: .f32), c: bsrC, on: stream)

            // Transpose: no nonzeros gives row pointers of zeros ([0] for no rows).
            let (tNoRows, _) = try CSRTranspose.encode(noRows, on: stream)
            let (tNoCols, _) = try CSRTranspose.encode(noCols, on: stream)
            let (tNoNonzeros, _) = try CSRTranspose.encode(noNonzeros, on: stream)
            try stream.synchronize()
            Self.expectRecorded(stream, fills: 1 + 1 + 1 + 3, "sparse")
            #expect(try c.readFloats() == [Float](repeating: 2, count: 12))
            #expect(try cZero.readFloats() == [Float](repeating: 0, count: 9))
            #expect(try sampled.readFloats() == [0, 0])
            #expect(try bsrC.readFloats() == [Float](repeating: 0, count: 64))
            #expect(try tNoRows.read().rowOffsets == [0, 0, 0, 0, 0, 0] && tNoRows.rows == 5 && tNoRows.cols == 0)
            #expect(try tNoCols.read().rowOffsets == [0] && tNoCols.rows == 0)
            #expect(try tNoNonzeros.read().rowOffsets == [0, 0, 0])
            #expect(throws: VkAttnError.self) { _ = try SpMMPlan(noRows, n: -1) }
        }
    }
}

extension EmptyInputTests {
    static func poisoned(_ device: Device, _ shape: [Int]) throws -> Tensor {
        try device.makeTensor([Float](repeating: .nan, count: shape.reduce(1, *)), shape: shape)
    }

    @Test func attentionWithNoBatchHeadsOrQueries() throws {
        try withDevice { device in
            let d = 32
            for causal in [false, true] {
                let attention = FlashAttention(mask: AttentionMask(causal: causal))
                // Empty outputs: no batch, no queries, no query heads (with or without key heads).
                for (qShape, kShape) in [([0, 8, 2, d], [0, 8, 1, d]), ([1, 0, 2, d], [1, 5, 2, d]), ([2, 4, 0, d], [2, 4, 1, d]),
                                         ([1, 3, 0, d], [1, 3, 0, d])] {
                    let stream = try device.makeStream()
                    let q = try device.makeTensor(shape: qShape, dtype: .f32)
                    let k = try device.makeTensor(shape: kShape, dtype: .f32)
                    let out = try attention.forward(q: q, k: k, v: k, on: stream)
                    #expect(out.o.shape == qShape && out.o.isEmpty && out.lse.isEmpty && out.path.hasPrefix("empty"), "\(qShape)")
                    let plan = try attention.forwardPlan(q: q, k: k, v: k)
                    #expect(plan.path.hasPrefix("empty"))
                    _ = try plan.encode(q: q, k: k, v: k, on: stream)
                    #expect(try attention.decode(q: q, kCache: k, vCache: k, on: stream).o.isEmpty)
                    // dK and dV are zero where there are keys (fills), dQ empty.
                    let grads = try attention.backward(q: q, k: k, v: k, o: out.o, lse: out.lse, dO: q, on: stream)
                    #expect(grads.dq.shape == qShape && grads.dk.shape == kShape && grads.path.hasPrefix("empty"))
                    try stream.synchronize()
                    Self.expectRecorded(stream, fills: kShape.contains(0) ? 0 : 2, "attention \(qShape) \(kShape) causal \(causal)")
                    if !kShape.contains(0) {
                        #expect(try grads.dk.readFloats().allSatisfy { $0 == 0 } && grads.dv.readFloats().allSatisfy { $0 == 0 })
                    }
                }
            }
        }
    }

    @Test func attentionWithNoKeysGivesTheRowsThatSeeNone() throws {
        try withDevice { device in
            let d = 32
            let attention = FlashAttention(mask: AttentionMask(causal: true))
            // Dense: queries but no keys. O = 0, LSE = -inf, by fills.
            let stream = try device.makeStream()
            let q = try device.makeTensor([Float](repeating: 1, count: 2 * 3 * 2 * d), shape: [2, 3, 2, d])
            let k = try device.makeTensor(shape: [2, 0, 1, d], dtype: .f32)
            let given = AttentionOutput(o: try Self.poisoned(device, [2, 3, 2, d]), lse: try Self.poisoned(device, [2, 2, 3]))
            let out = try attention.forward(q: q, k: k, v: k, into: given, on: stream)
            try stream.synchronize()
            Self.expectRecorded(stream, fills: 2, "forward, no keys")
            #expect(try out.o.readFloats().allSatisfy { $0 == 0 })
            #expect(try out.lse.readFloats().allSatisfy { $0 == -.infinity })

            // Decode from an empty cache, and the backward: dQ = 0 (dK, dV empty).
            let decodeStream = try device.makeStream()
            let decoded = try attention.decode(q: q, kCache: k, vCache: k, into: AttentionOutput(o: try Self.poisoned(device, [2, 3, 2, d]),
                                                                                                 lse: try Self.poisoned(device, [2, 2, 3])),
                                               on: decodeStream)
            let dq = try Self.poisoned(device, [2, 3, 2, d])
            let grads = try attention.backward(q: q, k: k, v: k, o: out.o, lse: out.lse, dO: q,
                                               into: AttentionGradients(dq: dq, dk: k, dv: device.makeTensor(shape: k.shape, dtype: .f32)), on: decodeStream)
            try decodeStream.synchronize()
            Self.expectRecorded(decodeStream, fills: 3, "decode and backward, no keys")
            #expect(try decoded.o.readFloats().allSatisfy { $0 == 0 } && decoded.lse.readFloats().allSatisfy { $0 == -.infinity })
            #expect(try grads.dq.readFloats().allSatisfy { $0 == 0 })

            // Keys but no queries: dK = dV = 0.
            let backStream = try device.makeStream()
            let q0 = try device.makeTensor(shape: [1, 0, 2, d], dtype: .f32)
            let k4 = try device.makeTensor(shape: [1, 4, 1, d], dtype: .f32)
            let (dk, dv) = (try Self.poisoned(device, [1, 4, 1, d]), try Self.poisoned(device, [1, 4, 1, d]))
            _ = try attention.backward(q: q0, k: k4, v: k4, o: q0, lse: device.makeTensor(shape: [1, 2, 0], dtype: .f32), dO: q0,
                                       into: AttentionGradients(dq: q0, dk: dk, dv: dv), on: backStream)
            try backStream.synchronize()
            Self.expectRecorded(backStream, fills: 2, "backward, no queries")
            #expect(try dk.readFloats().allSatisfy { $0 == 0 } && dv.readFloats().allSatisfy { $0 == 0 })

            // Packed: no sequences (cuSeqlens [0]), and sequences with queries but no keys at all.
            let packedStream = try device.makeStream()
            let none = try attention.forward(q: device.makeTensor(shape: [0, 2, d], dtype: .f32), k: device.makeTensor(shape: [0, 1, d], dtype: .f32),
                                             v: device.makeTensor(shape: [0, 1, d], dtype: .f32),
                                             layout: .packed(cuSeqlensQ: [0], cuSeqlensK: [0]), on: packedStream)
            #expect(none.o.shape == [0, 2, d] && none.lse.shape == [2, 0])
            let pq = try device.makeTensor([Float](repeating: 1, count: 3 * 2 * d), shape: [3, 2, d])
            let pk = try device.makeTensor(shape: [0, 1, d], dtype: .f32)
            let packed = try attention.forward(q: pq, k: pk, v: pk, layout: .packed(cuSeqlensQ: [0, 2, 3], cuSeqlensK: [0, 0, 0]), on: packedStream)
            try packedStream.synchronize()
            Self.expectRecorded(packedStream, fills: 2, "packed")
            #expect(try packed.o.readFloats().allSatisfy { $0 == 0 } && packed.lse.readFloats().allSatisfy { $0 == -.infinity })

            // Merging no partials: every row saw no key.
            let mergeStream = try device.makeStream()
            let (mo, mlse) = (try Self.poisoned(device, [1, 2, 2, d]), try Self.poisoned(device, [1, 2, 2]))
            try AttentionMerge.merge(partialO: device.makeTensor(shape: [0, 1, 2, 2, d], dtype: .f32),
                                     partialLSE: device.makeTensor(shape: [0, 1, 2, 2], dtype: .f32), into: mo, lse: mlse, on: mergeStream)
            try AttentionMerge.merge(partialO: device.makeTensor(shape: [3, 1, 0, 2, d], dtype: .f32),
                                     partialLSE: device.makeTensor(shape: [3, 1, 2, 0], dtype: .f32),
                                     into: device.makeTensor(shape: [1, 0, 2, d], dtype: .f32), lse: device.makeTensor(shape: [1, 2, 0], dtype: .f32),
                                     on: mergeStream)
            try mergeStream.synchronize()
            Self.expectRecorded(mergeStream, fills: 2, "merge")
            #expect(try mo.readFloats().allSatisfy { $0 == 0 } && mlse.readFloats().allSatisfy { $0 == -.infinity })

            // Still errors: query heads with no key/value heads, and a head dim no kernel takes.
            #expect(throws: VkAttnError.self) {
                _ = try attention.forward(q: device.makeTensor(shape: [1, 2, 2, d], dtype: .f32), k: device.makeTensor(shape: [1, 2, 0, d], dtype: .f32),
                                          v: device.makeTensor(shape: [1, 2, 0, d], dtype: .f32), on: mergeStream)
            }
            #expect(throws: VkAttnError.self) {
                let empty = try device.makeTensor(shape: [0, 2, 2, 0], dtype: .f32)
                _ = try attention.forward(q: empty, k: empty, v: empty, on: mergeStream)
            }
        }
    }
}

/// The fill kernel's push constants (Shaders/memory/fill.comp), for the binding test.
struct EmptyFillPush: PushConstantBlock {
    var count: UInt32
    var value: Float
}
