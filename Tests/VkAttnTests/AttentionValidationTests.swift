import Testing
import VkAttn
import TestSupport

@Suite("Flash attention: bad inputs are typed errors before dispatch")
struct AttentionValidationTests {
    func tensor(_ device: Device, _ shape: [Int], _ dtype: DType = .f32) throws -> Tensor {
        try device.makeTensor(shape: shape, dtype: dtype)
    }

    /// Expects `body` to throw a VkAttnError whose description names `op` and `what`.
    func expectError(_ op: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
        do {
            try body()
            Issue.record("no error for \(what)", sourceLocation: sourceLocation)
        } catch let error as VkAttnError {
            #expect(error.description.contains(op) && error.description.contains(what), "\(error)", sourceLocation: sourceLocation)
        } catch {
            Issue.record("not a VkAttnError: \(error)", sourceLocation: sourceLocation)
        }
    }

    @Test func shapesTypesAndHeads() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let a = FlashAttention()
            let q = try tensor(device, [1, 8, 4, 64]), k = try tensor(device, [1, 8, 2, 64])
            expectError("attention.forward", "headDim") {
                let x = try tensor(device, [1, 8, 2, 577])
                _ = try a.forward(q: x, k: x, v: x, on: stream)
            }
            expectError("attention.forward", "headDimV") {
                let x = try tensor(device, [1, 8, 2, 64])
                _ = try a.forward(q: x, k: x, v: try tensor(device, [1, 8, 2, 513]), on: stream)
            }
            do {  // MLA's widths: a backward tile fits large shared memories only, else the error names it
                let q = try tensor(device, [1, 8, 2, 576]), v = try tensor(device, [1, 8, 2, 512]), lse = try tensor(device, [1, 2, 8])
                _ = try a.backward(q: q, k: q, v: v, o: v, lse: lse, dO: v, on: stream)
                #expect(device.capabilities.maxComputeSharedMemoryBytes > 64 * 1024, "an MLA backward tile fit in \(device.capabilities.maxComputeSharedMemoryBytes) bytes")
            } catch let error as VkAttnError {
                #expect(error.description.contains("shared memory"), "\(error)")
            }
            expectError("attention.forward", "O") {
                // O takes V's width (Dv = 32 here), not Q's.
                let v = try tensor(device, [1, 8, 2, 32])
                _ = try a.forward(q: q, k: k, v: v, into: AttentionOutput(o: try tensor(device, [1, 8, 4, 64]), lse: try tensor(device, [1, 4, 8])), on: stream)
            }
            expectError("attention.forward", "heads") {
                let k3 = try tensor(device, [1, 8, 3, 64])
                _ = try a.forward(q: q, k: k3, v: k3, on: stream)
            }
            expectError("attention.forward", "K") { _ = try a.forward(q: q, k: try tensor(device, [1, 8, 2, 32]), v: k, on: stream) }
            expectError("attention.forward", "V") { _ = try a.forward(q: q, k: k, v: try tensor(device, [1, 9, 2, 64]), on: stream) }
            expectError("attention.forward", "K") { _ = try a.forward(q: q, k: try tensor(device, [2, 8, 2, 64]), v: try tensor(device, [2, 8, 2, 64]), on: stream) }
            // K f16 under an f32 Q is mixed precision; V must then be f16 too.
            expectError("attention.forward", "V") { _ = try a.forward(q: q, k: try tensor(device, [1, 8, 2, 64], .f16), v: k, on: stream) }
            expectError("attention.forward", "Q") { _ = try a.forward(q: try tensor(device, [8, 4, 64]), k: k, v: k, on: stream) }
            expectError("attention.forward", "outputDType") { _ = try FlashAttention(outputDType: .f16).forward(q: q, k: k, v: k, on: stream) }
            expectError("attention.forward", "O") {
                _ = try a.forward(q: q, k: k, v: k, into: AttentionOutput(o: try tensor(device, [1, 8, 4, 32]), lse: try tensor(device, [1, 4, 8])), on: stream)
            }
            expectError("attention.forward", "LSE") {
                _ = try a.forward(q: q, k: k, v: k, into: AttentionOutput(o: try tensor(device, [1, 8, 4, 64]), lse: try tensor(device, [1, 8, 4])), on: stream)
            }
            try stream.synchronize()
        }
    }

    @Test func optionsAndMasks() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let q = try tensor(device, [1, 40, 2, 32])
            expectError("attention.forward", "scale") { _ = try FlashAttention(scale: .nan).forward(q: q, k: q, v: q, on: stream) }
            expectError("attention.forward", "softcap") { _ = try FlashAttention(softcap: -1).forward(q: q, k: q, v: q, on: stream) }
            expectError("attention.forward", "windowLeft") {
                _ = try FlashAttention(mask: AttentionMask(windowLeft: -2)).forward(q: q, k: q, v: q, on: stream)
            }
            let rows: [Int32] = [0, 1, 2, 3]  // 40 positions in blocks of 16: 3 query blocks, 3 key blocks
            expectError("attention.forward", "blockSize") {
                let m = BlockMask(blockSize: 20, rowOffsets: [0, 1, 2], columnIndices: [0, 1])
                _ = try FlashAttention(mask: AttentionMask(blocks: m)).forward(q: q, k: q, v: q, on: stream)
            }
            expectError("attention.forward", "row 2") {
                let m = BlockMask(blockSize: 16, rowOffsets: rows, columnIndices: [0, 1, 3])
                _ = try FlashAttention(mask: AttentionMask(blocks: m)).forward(q: q, k: q, v: q, on: stream)
            }
            expectError("attention.forward", "row 1") {
                let m = BlockMask(blockSize: 16, rowOffsets: [0, 2, 1, 3], columnIndices: [0, 1, 2])
                _ = try FlashAttention(mask: AttentionMask(blocks: m)).forward(q: q, k: q, v: q, on: stream)
            }
            expectError("attention.forward", "rowOffsets") {
                let m = BlockMask(blockSize: 16, rowOffsets: [0, 1, 2], columnIndices: [0, 1])
                _ = try FlashAttention(mask: AttentionMask(blocks: m)).forward(q: q, k: q, v: q, on: stream)
            }
            expectError("attention.decode", "splits") { _ = try FlashAttention().decode(q: q, kCache: q, vCache: q, splits: 0, on: stream) }
            try stream.synchronize()
        }
    }

    @Test func packedSequenceOffsets() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let q = try tensor(device, [10, 2, 32])
            let a = FlashAttention()
            expectError("attention.forward", "not monotonic") {
                _ = try a.forward(q: q, k: q, v: q, layout: .packed(cuSeqlensQ: [0, 6, 4, 10], cuSeqlensK: [0, 3, 6, 10]), on: stream)
            }
            expectError("attention.forward", "cuSeqlensK") {
                _ = try a.forward(q: q, k: q, v: q, layout: .packed(cuSeqlensQ: [0, 4, 10], cuSeqlensK: [0, 4, 12]), on: stream)
            }
            expectError("attention.forward", "cuSeqlensQ") {
                _ = try a.forward(q: q, k: q, v: q, layout: .packed(cuSeqlensQ: [1, 4, 10], cuSeqlensK: [0, 4, 10]), on: stream)
            }
            expectError("attention.forward", "cuSeqlensK") {
                _ = try a.forward(q: q, k: q, v: q, layout: .packed(cuSeqlensQ: [0, 4, 10], cuSeqlensK: [0, 10]), on: stream)
            }
            try stream.synchronize()
        }
    }

    @Test func devicesAndLimits() throws {
        let log = ValidationLog()
        do {
            let instance = try Instance(log: log)
            let physical = try instance.selectDevice()
            let a = try Device(physicalDevice: physical), b = try Device(physicalDevice: physical)
            let qa = try a.makeTensor(shape: [1, 8, 1, 32], dtype: .f32)
            let kb = try b.makeTensor(shape: [1, 8, 1, 32], dtype: .f32)
            let stream = try a.makeStream()
            expectError("attention.forward", "K") { _ = try FlashAttention().forward(q: qa, k: kb, v: qa, on: stream) }
            expectError("attention.forward", "stream") { _ = try FlashAttention().forward(q: kb, k: kb, v: kb, on: stream) }
            // A tensor larger than one binding can hold.
            let range = a.capabilities.maxStorageBufferRange
            let tokens = range / (32 * 128 * 4) + 1
            if range <= 1 << 30 {
                let big = try a.makeTensor(shape: [1, tokens, 32, 128], dtype: .f32)
                expectError("attention.forward", "needs") { _ = try FlashAttention().forward(q: big, k: big, v: big, on: stream) }
            }
            try stream.synchronize()
        }
        expectClean(log)
    }

    @Test func backwardOperands() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let q = try tensor(device, [1, 16, 2, 32])
            let lse = try tensor(device, [1, 2, 16])
            let a = FlashAttention()
            expectError("attention.backward", "dO") {
                _ = try a.backward(q: q, k: q, v: q, o: q, lse: lse, dO: try tensor(device, [1, 16, 2, 64]), on: stream)
            }
            expectError("attention.backward", "LSE") {
                _ = try a.backward(q: q, k: q, v: q, o: q, lse: try tensor(device, [1, 2, 16], .f16), dO: q, on: stream)
            }
            expectError("attention.backward", "O") {
                _ = try a.backward(q: q, k: q, v: q, o: try tensor(device, [1, 16, 2, 32], .f16), lse: lse, dO: q, on: stream)
            }
            try stream.synchronize()
        }
    }

    /// Windows past any sequence (Int.max, Int32.max) are unbounded, not an empty band; an
    /// absurd diagonal offset is a typed error, not a trap.
    @Test func hugeWindowsAreUnboundedAndHugeOffsetsAreErrors() throws {
        let seed = testSeed()
        try withDevice { device in
            for (left, right) in [(Int.max, Int.max), (Int(Int32.max), Int(Int32.max)), (Int.max, nil)] as [(Int, Int?)] {
                for causal in [false, true] {
                    let mask = AttentionMask(causal: causal, windowLeft: left, windowRight: right)
                    let errors = try checkForward(AttentionCase(seed: seed, sq: 40, sk: 50, attention: FlashAttention(mask: mask)), device)
                    #expect(errors.o < 1e-4, "window (\(left), \(String(describing: right))) seed \(seed)")
                    #expect(mask.allows(query: 0, key: 0, sq: 40, sk: 50) && mask.keptFraction(sq: 40, sk: 50) == AttentionMask(causal: causal).keptFraction(sq: 40, sk: 50))
                }
            }
            let stream = try device.makeStream()
            let q = try tensor(device, [1, 16, 2, 32])
            for offset in [Int.min, Int.max, (1 << 30) + 1] {
                let attention = FlashAttention(mask: AttentionMask(causal: true, diagonalOffset: offset))
                expectError("attention.forward", "diagonalOffset") { _ = try attention.forward(q: q, k: q, v: q, on: stream) }
                _ = attention.mask.allows(query: 3, key: 2, sq: 16, sk: 16)
                _ = attention.mask.keptFraction(sq: 16, sk: 16)
            }
            try stream.synchronize()
        }
    }
}
