import Testing
import VkAttn
import TestSupport

@Suite("Shader copy and fill")
struct MemoryKernelTests {
    /// Word counts around the uvec4 width and the workgroup size.
    static let wordCounts = [1, 2, 3, 4, 5, 7, 255, 256, 257, 1021, 4096, 65_537]

    @Test(arguments: wordCounts)
    func copyMatchesSourceAndStaysInBounds(words: Int) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let guardWords = 8  // aligned offset and poisoned words either side
            let source = rng.words(words)
            let src = try device.makeBuffer(rng.words(guardWords) + source + rng.words(guardWords))
            let poison = [UInt32](repeating: Float.nan.bitPattern, count: words + 2 * guardWords)
            let dst = try device.makeBuffer(poison)
            let stream = try device.makeStream()
            try ShaderCopy().encode(from: src.slice(of: UInt32.self, first: guardWords, count: words),
                                    to: dst.slice(of: UInt32.self, first: guardWords, count: words), on: stream)
            try stream.synchronize()
            let out = try dst.read(UInt32.self, count: poison.count)
            #expect(Array(out[guardWords..<guardWords + words]) == source, "words \(words) seed \(seed)")
            #expect(Array(out[..<guardWords]) == Array(poison[..<guardWords]), "wrote before the range")
            #expect(Array(out[(guardWords + words)...]) == Array(poison[(guardWords + words)...]), "wrote after the range")
        }
    }

    @Test(arguments: wordCounts)
    func fillWritesExactlyTheRange(words: Int) throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let guardWords = 4
            let background = rng.words(words + 2 * guardWords)
            let buffer = try device.makeBuffer(background)
            let range = try buffer.slice(of: UInt32.self, first: guardWords, count: words)
            let value = rng.floats(1, in: -100...100)[0]
            let stream = try device.makeStream()
            try ShaderFill.encode(range, value: value, on: stream)
            try stream.synchronize()
            var out = try buffer.read(UInt32.self, count: background.count)
            #expect(out[guardWords..<guardWords + words].allSatisfy { $0 == value.bitPattern }, "f32 words \(words) seed \(seed)")
            #expect(Array(out[..<guardWords]) == Array(background[..<guardWords]))
            #expect(Array(out[(guardWords + words)...]) == Array(background[(guardWords + words)...]))

            let word = UInt32(truncatingIfNeeded: rng.next())
            try ShaderFill.encode(range, value: word, on: stream)
            try stream.synchronize()
            out = try buffer.read(UInt32.self, count: background.count)
            #expect(out[guardWords..<guardWords + words].allSatisfy { $0 == word }, "u32 words \(words) seed \(seed)")
            #expect(Array(out[(guardWords + words)...]) == Array(background[(guardWords + words)...]))
        }
    }

    @Test func copiesLargerThanOneBindingAreSplit() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        try withDevice { device in
            let range = device.capabilities.maxStorageBufferRange
            guard range <= 256 << 20 else { return }  // keep the test small on GPUs with huge ranges
            let words = range / 4 + 1001
            var source = [UInt32](repeating: 0, count: words)
            for i in stride(from: 0, to: words, by: 4093) { source[i] = UInt32(truncatingIfNeeded: rng.next()) }
            source[words - 1] = 0xC0FFEE
            let src = try device.makeBuffer(source)
            let dst = try device.makeBuffer(of: UInt32.self, count: words)
            let stream = try device.makeStream()
            try ShaderFill.encode(dst.whole, value: UInt32(7), on: stream)
            try stream.barrier()
            try ShaderCopy().encode(from: src.whole, to: dst.whole, on: stream)
            try stream.synchronize()
            #expect(try dst.read(UInt32.self, count: words) == source, "seed \(seed)")
        }
    }

    @Test func badSizesAreRejected() throws {
        try withDevice { device in
            let a = try device.makeBuffer(byteCount: 64)
            let b = try device.makeBuffer(byteCount: 64)
            let stream = try device.makeStream()
            #expect(throws: VulkanError.self) {
                try ShaderCopy().encode(from: a.slice(offset: 0, byteCount: 32), to: b.slice(offset: 0, byteCount: 16), on: stream)
            }
            #expect(throws: VulkanError.self) {
                try ShaderCopy().encode(from: a.slice(offset: 0, byteCount: 10), to: b.slice(offset: 0, byteCount: 10), on: stream)
            }
            #expect(throws: VulkanError.self) { try ShaderFill.encode(a.slice(offset: 0, byteCount: 6), value: Float(1), on: stream) }
            try stream.synchronize()
        }
    }
}
