import Testing
import VkAttn
import TestSupport

/// Runs prefix scans on the device and checks them against `ScanReference`: integers exactly,
/// f32 against the fp64 reference with the bound explained in `checkFloats`.
struct ScanHarness {
    let device: Device
    let seed: UInt64
    var rng: SeededRandom

    init(device: Device, seed: UInt64) {
        self.device = device
        self.seed = seed
        self.rng = SeededRandom(seed: seed)
    }

    /// Guard words poisoned around the output catch out-of-bounds writes.
    static let guardWords = 8

    /// Scans `values` (as `dtype`, shape `shape`) and returns the output words between the guards.
    func run(_ scan: PrefixScan, words: [UInt32], shape: [Int], dtype: DType, outputCount: Int? = nil,
             segments: ScanSegments = .none) throws -> (out: [UInt32], dispatch: ScanDispatch) {
        let count = words.count
        let outCount = outputCount ?? count
        let g = Self.guardWords
        let inBuffer = try device.makeBuffer(words)
        let poison = Float.nan.bitPattern
        let outBuffer = try device.makeBuffer([UInt32](repeating: poison, count: outCount + 2 * g))
        let input = try Tensor(inBuffer, shape: shape, dtype: dtype)
        let outShape = outputCount.map { [$0] } ?? shape
        let output = try Tensor(outBuffer, shape: outShape, dtype: dtype, byteOffset: 4 * g)
        let stream = try device.makeStream()
        try ShaderFill.encode(output.slice, value: Float.nan, on: stream)
        try stream.barrier()
        let dispatch = try scan.encode(input: input, output: output, segments: segments, on: stream)
        try stream.synchronize()
        let all = try outBuffer.read(UInt32.self, count: outCount + 2 * g)
        #expect(all[..<g].allSatisfy { $0 == poison }, "wrote before the output, seed \(seed)")
        #expect(all[(g + outCount)...].allSatisfy { $0 == poison }, "wrote after the output, seed \(seed)")
        return (Array(all[g..<(g + outCount)]), dispatch)
    }

    /// f32 check. Any order of fp32 additions of a prefix errs by at most depth * u * sum|x|
    /// (u = 2^-24, depth = additions on the longest path). Here depth <= 32 (serial, per
    /// invocation) + 2 * 10 (subgroup and workgroup trees) + tiles before the element (the
    /// look-back chain): for the sizes below (at most a few dozen tiles) under ~100, so the
    /// bound 1e-5 * sum|x| (~170 u) holds with margin while a lost or doubled element (an
    /// error of |x_i|, about sum|x| / i) is still caught for i up to ~1e4. Max: exact.
    static func checkFloats(_ got: [Float], _ ref: [Double], scale: [Double], op: ScanOperator,
                            seed: UInt64, _ what: String) {
        var worst = 0.0
        var at = -1
        for i in got.indices {
            let g = Double(got[i])
            if op == .max {
                if !(g == ref[i] || (g.isInfinite && ref[i].isInfinite && g.sign == ref[i].sign) || (g.isNaN && ref[i].isNaN)) { at = i; break }
                continue
            }
            let err = abs(g - ref[i])
            let bound = 1e-5 * scale[i] + 1e-30
            if !(err <= bound) { at = i; worst = err; break }
        }
        #expect(at < 0, "\(what): element \(at) is \(at >= 0 ? got[at] : 0), reference \(at >= 0 ? ref[at] : 0) (error \(worst)), seed \(seed)")
    }
}

@Suite("Prefix scan")
struct ScanTests {
    static let sizes = [1, 2, 3, 4, 5, 7, 31, 97, 1021, 4095, 4096, 4097, 12_289, 65_537]

    @Test(arguments: ScanAlgorithm.allCases)
    func f32SumsMatchReference(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            for n in Self.sizes {
                for exclusive in [false, true] {
                    let x = h.rng.floats(n, in: -1...1)
                    let scan = PrefixScan(op: .add, exclusive: exclusive, algorithm: path)
                    let (out, d) = try h.run(scan, words: x.map(\.bitPattern), shape: [n], dtype: .f32)
                    #expect(d.algorithm == path)
                    let ref = ScanReference.scan(x, op: .add, exclusive: exclusive)
                    var scale = ScanReference.absoluteScale(x)
                    if exclusive { scale = [0] + scale.dropLast() }
                    ScanHarness.checkFloats(out.map(Float.init(bitPattern:)), ref, scale: scale, op: .add, seed: seed,
                                            "f32 add n \(n) exclusive \(exclusive) \(path)")
                }
            }
        }
    }

    @Test(arguments: ScanAlgorithm.allCases)
    func integerSumsAreExact(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            for n in Self.sizes {
                for exclusive in [false, true] {
                    let words = h.rng.words(n)
                    let scan = PrefixScan(op: .add, exclusive: exclusive, algorithm: path)
                    let (u, _) = try h.run(scan, words: words, shape: [n], dtype: .u32)
                    #expect(u == ScanReference.scan(words, exclusive: exclusive), "u32 n \(n) exclusive \(exclusive) \(path) seed \(seed)")
                    let ints = words.map { Int32(bitPattern: $0) }
                    let (i, _) = try h.run(scan, words: words, shape: [n], dtype: .i32)
                    #expect(i.map { Int32(bitPattern: $0) } == ScanReference.scan(ints, exclusive: exclusive),
                            "i32 n \(n) exclusive \(exclusive) \(path) seed \(seed)")
                }
            }
        }
    }

    @Test(arguments: ScanAlgorithm.allCases)
    func runningMaxima(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            for n in Self.sizes {
                for exclusive in [false, true] {
                    let x = h.rng.floats(n, in: -1000...1000)
                    let scan = PrefixScan(op: .max, exclusive: exclusive, algorithm: path)
                    let (out, _) = try h.run(scan, words: x.map(\.bitPattern), shape: [n], dtype: .f32)
                    let ref = ScanReference.scan(x, op: .max, exclusive: exclusive)
                    ScanHarness.checkFloats(out.map(Float.init(bitPattern:)), ref, scale: ref, op: .max, seed: seed,
                                            "max n \(n) exclusive \(exclusive) \(path)")
                }
            }
        }
    }
}

/// A max scan propagates NaN from where it appears to the end of its segment (PyTorch's cummax,
/// NumPy's maximum.accumulate), on every path, in lone values and in runs across tiles.
@Suite("Prefix scan: NaN in a max scan")
struct ScanNaNTests {
    @Test(arguments: ScanAlgorithm.allCases)
    func nanPropagatesToTheEndOfItsSegment(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            for (rows, n) in [(1, 1), (1, 7), (1, 4099), (3, 1023), (2, 20000)] {
                for exclusive in [false, true] {
                    var x = h.rng.floats(rows * n, in: -5...5)
                    let at = Int(h.rng.next() % UInt64(rows * n))
                    x[at] = .nan
                    if rows * n > 10 { x[(at + rows * n / 2) % (rows * n)] = -.nan }
                    let (f, _) = try h.run(PrefixScan(op: .max, exclusive: exclusive, algorithm: path),
                                           words: x.map(\.bitPattern), shape: rows > 1 ? [rows, n] : [n], dtype: .f32)
                    let ref = ScanReference.scan(x, op: .max, exclusive: exclusive, rowLength: rows > 1 ? n : nil)
                    ScanHarness.checkFloats(f.map(Float.init(bitPattern:)), ref, scale: ref, op: .max, seed: seed,
                                            "NaN at \(at) rows \(rows) n \(n) exclusive \(exclusive) \(path)")
                }
            }
        }
    }
}

@Suite("Prefix scan: segments, batches, large arrays")
struct ScanSegmentTests {
    @Test(arguments: ScanAlgorithm.allCases)
    func batchedRowsScanIndependently(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            for (rows, n) in [(3, 1), (5, 7), (2, 4096), (7, 1023), (16, 333), (1, 9001)] {
                for exclusive in [false, true] {
                    let words = h.rng.words(rows * n)
                    let scan = PrefixScan(op: .add, exclusive: exclusive, algorithm: path)
                    let (out, _) = try h.run(scan, words: words, shape: [rows, n], dtype: .u32)
                    #expect(out == ScanReference.scan(words, exclusive: exclusive, rowLength: n),
                            "rows \(rows) n \(n) exclusive \(exclusive) \(path) seed \(seed)")
                    let x = h.rng.floats(rows * n)
                    let (f, _) = try h.run(PrefixScan(op: .max, exclusive: exclusive, algorithm: path),
                                           words: x.map(\.bitPattern), shape: [rows, n], dtype: .f32)
                    let ref = ScanReference.scan(x, op: .max, exclusive: exclusive, rowLength: n)
                    ScanHarness.checkFloats(f.map(Float.init(bitPattern:)), ref, scale: ref, op: .max, seed: seed,
                                            "max rows \(rows) n \(n) exclusive \(exclusive) \(path)")
                }
            }
        }
    }

    @Test(arguments: ScanAlgorithm.allCases)
    func headFlagsAndOffsetsRestartTheScan(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            for n in [1, 13, 4097, 20_011] {
                for exclusive in [false, true] {
                    // Sparse heads, a run of heads, and heads at the tile edges.
                    var flags = (0..<n).map { _ in h.rng.next() % 97 == 0 }
                    for i in [0, 1, 2, 2047, 2048, 4095, 4096, 6143, 6144, 8191, 8192] where i < n { flags[i] = h.rng.next() % 2 == 0 }
                    let words = h.rng.words(n).map { $0 & 0xFFFF }
                    let flagTensor = try device.makeTensor(flags.map { $0 ? 1 : 0 }, shape: [n], dtype: .u32)
                    let scan = PrefixScan(op: .add, exclusive: exclusive, algorithm: path)
                    let (out, _) = try h.run(scan, words: words, shape: [n], dtype: .i32, segments: .headFlags(flagTensor))
                    let ref = ScanReference.scan(words.map { Int32(bitPattern: $0) }, exclusive: exclusive, flags: flags)
                    #expect(out.map { Int32(bitPattern: $0) } == ref, "flags n \(n) exclusive \(exclusive) \(path) seed \(seed)")

                    // The same segments as offsets (shuffled, with a repeat and ignored ones past the end and negative).
                    var offsets = flags.indices.filter { flags[$0] }.map(Int32.init)
                    if let first = offsets.first { offsets.append(first) }
                    offsets += [Int32(n), Int32(n + 5), -1]
                    offsets.shuffle(using: &h.rng)
                    let offsetTensor = try device.makeTensor(offsets.map(Float.init), shape: [offsets.count], dtype: .i32)
                    let (o, _) = try h.run(scan, words: words, shape: [n], dtype: .i32, segments: .offsets(offsetTensor))
                    #expect(o.map { Int32(bitPattern: $0) } == ref, "offsets n \(n) exclusive \(exclusive) \(path) seed \(seed)")
                }
            }
            // Rows and flags together, f32 sums.
            let rows = 6, n = 1500
            let x = h.rng.floats(rows * n)
            let flags = (0..<(rows * n)).map { _ in h.rng.next() % 50 == 0 }
            let flagTensor = try device.makeTensor(flags.map { $0 ? 1 : 0 }, shape: [rows, n], dtype: .u32)
            let (f, _) = try h.run(PrefixScan(op: .add, algorithm: path), words: x.map(\.bitPattern), shape: [rows, n],
                                   dtype: .f32, segments: .headFlags(flagTensor))
            ScanHarness.checkFloats(f.map(Float.init(bitPattern:)), ScanReference.scan(x, op: .add, rowLength: n, flags: flags),
                                    scale: ScanReference.absoluteScale(x, rowLength: n, flags: flags), op: .add, seed: seed,
                                    "rows + flags \(path)")
        }
    }

    @Test(arguments: ScanAlgorithm.allCases)
    func exclusiveScanWritesTheTotal(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            for n in [1, 6, 4096, 10_007] {
                let counts = h.rng.words(n).map { $0 % 40 }
                let scan = PrefixScan(op: .add, exclusive: true, algorithm: path)
                let (out, _) = try h.run(scan, words: counts, shape: [n], dtype: .u32, outputCount: n + 1)
                let ref = ScanReference.scan(counts, exclusive: true)
                #expect(out == ref + [counts.reduce(0, &+)], "n \(n) \(path) seed \(seed)")
            }
            // The BufferSlice form (CSR row pointers from row counts).
            let counts = h.rng.words(777).map { $0 % 9 }
            let countBuffer = try device.makeBuffer(counts)
            let pointers = try device.makeBuffer(of: UInt32.self, count: counts.count + 1)
            let stream = try device.makeStream()
            try PrefixScan(op: .add, exclusive: true, algorithm: path).encode(input: countBuffer.whole, output: pointers.whole,
                                                                        count: counts.count, dtype: .u32, on: stream)
            try stream.synchronize()
            #expect(try pointers.read(UInt32.self, count: counts.count + 1) == ScanReference.scan(counts, exclusive: true) + [counts.reduce(0, +)],
                    "slices \(path) seed \(seed)")
        }
    }

    /// >= 2^20 elements: f32 holding small integers (every prefix exact in fp32) and i32.
    @Test(arguments: ScanAlgorithm.allCases)
    func longArraysAreExact(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            let n = (1 << 20) + 4099
            let small = h.rng.words(n).map { Float(Int32($0 % 17) - 8) }
            let (f, _) = try h.run(PrefixScan(op: .add, algorithm: path), words: small.map(\.bitPattern), shape: [n], dtype: .f32)
            let ref = ScanReference.scan(small, op: .add)
            let firstBad = f.indices.first { Double(Float(bitPattern: f[$0])) != ref[$0] }
            #expect(firstBad == nil, "f32 n \(n) \(path): element \(firstBad ?? -1) seed \(seed)")
            let words = h.rng.words(n)
            let (i, _) = try h.run(PrefixScan(op: .add, exclusive: true, algorithm: path), words: words, shape: [n], dtype: .i32)
            #expect(i.map { Int32(bitPattern: $0) } == ScanReference.scan(words.map { Int32(bitPattern: $0) }, exclusive: true),
                    "i32 n \(n) \(path) seed \(seed)")
        }
    }

    /// An array larger than one binding is scanned in chunks with the carry between them.
    @Test(arguments: ScanAlgorithm.allCases)
    func arraysLargerThanOneBindingCarryAcrossChunks(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            let range = device.capabilities.maxStorageBufferRange
            guard range <= 128 << 20 else { return }  // keep the test small on GPUs with huge ranges
            var rng = SeededRandom(seed: seed)
            let n = range / 4 + 5003
            var words = [UInt32](repeating: 0, count: n)
            let salt = UInt32(truncatingIfNeeded: rng.next())
            for i in 0..<n { words[i] = (UInt32(truncatingIfNeeded: i) &* 2_654_435_761 ^ salt) >> 20 }
            let input = try Tensor(try device.makeBuffer(words), shape: [n], dtype: .u32)
            let output = try device.makeTensor(shape: [n], dtype: .u32)
            let stream = try device.makeStream()
            let d = try PrefixScan(op: .add, algorithm: path).encode(input: input, output: output, on: stream)
            try stream.synchronize()
            #expect(d.chunks == 2)
            let out = try output.buffer.read(UInt32.self, count: n)
            var running: UInt32 = 0
            var firstBad = -1
            for i in 0..<n {
                running &+= words[i]
                if out[i] != running { firstBad = i; break }
            }
            #expect(firstBad < 0, "element \(firstBad) of \(n) \(path) seed \(seed)")
        }
    }

    /// The fallback (a tile reducing an unpublished predecessor from the input) gives the same
    /// results; forced on the nearest predecessors so that it runs deterministically.
    @Test func forcedFallbacksStayCorrect() throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            var tuning = PrefixScan.Tuning.preferred(for: device)
            for (forced, polls, perGroup) in [(1, 0, 1), (3, 16, 3), (40, 0, 32)] {
                tuning.forcedFallbacks = forced
                tuning.lookbackPolls = polls
                tuning.tilesPerWorkgroup = perGroup
                let n = 9 * tuning.tileElements + 77
                let words = h.rng.words(n)
                let scan = PrefixScan(op: .add, algorithm: .singlePass, tuning: tuning)
                let (out, d) = try h.run(scan, words: words, shape: [n], dtype: .u32)
                #expect(out == ScanReference.scan(words), "forced \(forced) seed \(seed)")
                let fallbacks = try d.fallbacks()
                #expect(fallbacks >= 9, "forced \(forced): \(fallbacks) fallbacks")
                let flags = (0..<n).map { _ in h.rng.next() % 3000 == 0 }
                let flagTensor = try device.makeTensor(flags.map { $0 ? 1 : 0 }, shape: [n], dtype: .u32)
                let (seg, _) = try h.run(PrefixScan(op: .add, exclusive: true, algorithm: .singlePass, tuning: tuning),
                                         words: words, shape: [n], dtype: .u32, segments: .headFlags(flagTensor))
                #expect(seg == ScanReference.scan(words, exclusive: true, flags: flags), "segmented forced \(forced) seed \(seed)")
            }
        }
    }

    /// The launch shape GPUs get (256 invocations, 16 items, one tile per workgroup, 16-byte
    /// vectors), run here too.
    @Test(arguments: ScanAlgorithm.allCases)
    func gpuTuning(path: ScanAlgorithm) throws {
        let seed = testSeed()
        try withDevice { device in
            var h = ScanHarness(device: device, seed: seed)
            guard device.capabilities.maxWorkgroupInvocations >= 256 else { return }
            let tuning = PrefixScan.Tuning(workgroupSize: 256, itemsPerInvocation: 16, lookbackPolls: 64, wideLoads: false,
                                           tilesPerWorkgroup: 1)
            for n in [1, 4097, 70_001] {
                let words = h.rng.words(n)
                let (out, _) = try h.run(PrefixScan(op: .add, exclusive: n % 2 == 1, algorithm: path, tuning: tuning),
                                         words: words, shape: [n], dtype: .u32)
                #expect(out == ScanReference.scan(words, exclusive: n % 2 == 1), "n \(n) \(path) seed \(seed)")
                let flags = (0..<n).map { _ in h.rng.next() % 300 == 0 }
                let flagTensor = try device.makeTensor(flags.map { $0 ? 1 : 0 }, shape: [n], dtype: .u32)
                let x = h.rng.floats(n)
                let (f, _) = try h.run(PrefixScan(op: .max, algorithm: path, tuning: tuning), words: x.map(\.bitPattern), shape: [n],
                                       dtype: .f32, segments: .headFlags(flagTensor))
                let ref = ScanReference.scan(x, op: .max, flags: flags)
                ScanHarness.checkFloats(f.map(Float.init(bitPattern:)), ref, scale: ref, op: .max, seed: seed, "gpu tuning max n \(n) \(path)")
            }
        }
    }

    @Test func inPlaceScanWithReduceThenScan() throws {
        let seed = testSeed()
        try withDevice { device in
            var rng = SeededRandom(seed: seed)
            let words = rng.words(50_001)
            let t = try Tensor(try device.makeBuffer(words), shape: [words.count], dtype: .u32)
            let stream = try device.makeStream()
            try PrefixScan(op: .add, algorithm: .reduceThenScan).encode(input: t, output: t, on: stream)
            try stream.synchronize()
            #expect(try t.buffer.read(UInt32.self, count: words.count) == ScanReference.scan(words), "seed \(seed)")
            #expect(throws: VkAttnError.self) { try PrefixScan(op: .add, algorithm: .singlePass).encode(input: t, output: t, on: stream) }
        }
    }

    @Test func badInputsThrowTypedErrors() throws {
        try withDevice { device in
            let stream = try device.makeStream()
            let x = try device.makeTensor(shape: [100], dtype: .f32)
            let y = try device.makeTensor(shape: [100], dtype: .f32)
            let name = PrefixScan.opName
            func expectError(_ expected: VkAttnError, _ body: () throws -> Void) {
                #expect(throws: expected) { try body() }
            }
            let i = try device.makeTensor(shape: [100], dtype: .i32)
            expectError(.dtypeMismatch(op: name, operand: "input", expected: "f32", actual: "i32")) {
                try PrefixScan(op: .max).encode(input: i, output: i, on: stream)
            }
            let h = try device.makeTensor(shape: [100], dtype: .f16)
            expectError(.dtypeMismatch(op: name, operand: "input", expected: "f32|i32|u32", actual: "f16")) {
                try PrefixScan().encode(input: h, output: h, on: stream)
            }
            let short = try device.makeTensor(shape: [99], dtype: .f32)
            expectError(.shapeMismatch(op: name, operand: "output", expected: "[100]", actual: "[99]")) {
                try PrefixScan().encode(input: x, output: short, on: stream)
            }
            let long = try device.makeTensor(shape: [101], dtype: .f32)
            expectError(.shapeMismatch(op: name, operand: "output", expected: "[100]", actual: "[101]")) {
                try PrefixScan().encode(input: x, output: long, on: stream)  // a total needs an exclusive scan
            }
            expectError(.dtypeMismatch(op: name, operand: "output", expected: "f32", actual: "i32")) {
                try PrefixScan().encode(input: x, output: i, on: stream)
            }
            let badFlags = try device.makeTensor(shape: [50], dtype: .u32)
            expectError(.shapeMismatch(op: name, operand: "segments.headFlags", expected: "[100] or [100]", actual: "[50]")) {
                try PrefixScan().encode(input: x, output: y, segments: .headFlags(badFlags), on: stream)
            }
            let floatFlags = try device.makeTensor(shape: [100], dtype: .f32)
            expectError(.dtypeMismatch(op: name, operand: "segments.headFlags", expected: "u32|i32", actual: "f32")) {
                try PrefixScan().encode(input: x, output: y, segments: .headFlags(floatFlags), on: stream)
            }
            let offsets2D = try device.makeTensor(shape: [2, 2], dtype: .u32)
            expectError(.shapeMismatch(op: name, operand: "segments.offsets", expected: "[segments]", actual: "[2, 2]")) {
                try PrefixScan().encode(input: x, output: y, segments: .offsets(offsets2D), on: stream)
            }
            let buffer = try device.makeBuffer(byteCount: 1024)
            let misaligned = try Tensor(buffer, shape: [100], dtype: .f32, byteOffset: 4)
            #expect(throws: VkAttnError.self) { try PrefixScan().encode(input: misaligned, output: y, on: stream) }
            var tuning = PrefixScan.Tuning.preferred(for: device)
            tuning.itemsPerInvocation = 6
            #expect(throws: VkAttnError.self) { try PrefixScan(tuning: tuning).encode(input: x, output: y, on: stream) }
            tuning = PrefixScan.Tuning.preferred(for: device)
            tuning.workgroupSize = 100
            #expect(throws: VkAttnError.self) { try PrefixScan(tuning: tuning).encode(input: x, output: y, on: stream) }
            #expect(throws: VkAttnError.self) {
                try PrefixScan().encode(input: buffer.whole, output: buffer.whole, count: -1, dtype: .u32, on: stream)
            }
            let other = try Device()
            let foreign = try other.makeTensor(shape: [100], dtype: .f32)
            #expect(throws: VkAttnError.self) { try PrefixScan().encode(input: x, output: foreign, on: stream) }
            try stream.synchronize()
        }
    }
}
