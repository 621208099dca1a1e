import Testing
import VkAttn
import TestSupport

#if canImport(Glibc)
import Glibc
#endif

@Suite("Matrix Market reader: fields, symmetries, and errors that name the line")
struct MatrixMarketTests {
    @Test func generalRealWithCommentsDuplicatesAndCRLF() throws {
        let text = "%%MatrixMarket matrix coordinate real general\r\n% a comment\r\n\r\n3 4 5\r\n1 2 0.5\r\n3 4 -2e1\r\n1 1 1.25\r\n1 2 0.25\r\n  2  3  7  \r\n"
        let a = try MatrixMarket.parse(text)
        #expect(a.rows == 3 && a.cols == 4)
        #expect(a.rowOffsets == [0, 2, 3, 4])
        #expect(a.columnIndices == [0, 1, 2, 3])
        #expect(a.values == [1.25, 0.75, 7, -20])
        try a.validate(op: "test")
    }

    @Test func integerAndPatternFields() throws {
        let integer = try MatrixMarket.parse("%%MatrixMarket MATRIX Coordinate INTEGER general\n2 2 2\n2 1 -3\n1 2 4\n")
        #expect(integer.values == [4, -3] && integer.columnIndices == [1, 0])
        let pattern = try MatrixMarket.parse("%%MatrixMarket matrix coordinate pattern general\n2 3 3\n1 3\n2 1\n2 2\n")
        #expect(pattern.values == [1, 1, 1] && pattern.rowOffsets == [0, 1, 3] && pattern.columnIndices == [2, 0, 1])
    }

    @Test func symmetricAndSkewSymmetricAreMirrored() throws {
        let sym = try MatrixMarket.parse("%%MatrixMarket matrix coordinate real symmetric\n3 3 3\n1 1 2\n3 1 5\n3 2 -1\n")
        #expect(sym.rowOffsets == [0, 2, 3, 5])
        #expect(sym.columnIndices == [0, 2, 2, 0, 1])
        #expect(sym.values == [2, 5, -1, 5, -1])
        let skew = try MatrixMarket.parse("%%MatrixMarket matrix coordinate integer skew-symmetric\n2 2 1\n2 1 4\n")
        #expect(skew.rowOffsets == [0, 1, 2] && skew.columnIndices == [1, 0] && skew.values == [-4, 4])
        let patternSym = try MatrixMarket.parse("%%MatrixMarket matrix coordinate pattern symmetric\n2 2 1\n2 1\n")
        #expect(patternSym.values == [1, 1])
    }

    struct Bad: CustomTestStringConvertible, Sendable {
        var name: String
        var text: String
        var line: Int
        var reasonContains: String
        var testDescription: String { name }
    }

    static let header = "%%MatrixMarket matrix coordinate real general\n"
    static let bad: [Bad] = [
        Bad(name: "empty", text: "", line: 1, reasonContains: "empty input"),
        Bad(name: "no banner", text: "3 3 1\n1 1 1\n", line: 1, reasonContains: "banner"),
        Bad(name: "array format", text: "%%MatrixMarket matrix array real general\n2 2\n1\n2\n3\n4\n", line: 1, reasonContains: "format `array`"),
        Bad(name: "complex field", text: "%%MatrixMarket matrix coordinate complex general\n1 1 1\n1 1 1 0\n", line: 1, reasonContains: "field `complex`"),
        Bad(name: "hermitian", text: "%%MatrixMarket matrix coordinate real hermitian\n1 1 1\n1 1 1\n", line: 1, reasonContains: "symmetry `hermitian`"),
        Bad(name: "short banner", text: "%%MatrixMarket matrix coordinate real\n1 1 1\n1 1 1\n", line: 1, reasonContains: "4 words"),
        Bad(name: "no size line", text: header + "% only a comment\n", line: 3, reasonContains: "missing the size line"),
        Bad(name: "size line short", text: header + "% c\n3 3\n1 1 1\n", line: 3, reasonContains: "size line must be"),
        Bad(name: "size line negative", text: header + "3 -3 1\n1 1 1\n", line: 2, reasonContains: "not valid"),
        Bad(name: "row out of range", text: header + "3 3 2\n1 1 1\n4 1 1\n", line: 4, reasonContains: "entry (4, 1) is outside"),
        Bad(name: "zero index", text: header + "3 3 1\n0 1 1\n", line: 3, reasonContains: "entry (0, 1) is outside"),
        Bad(name: "column out of range", text: header + "3 3 1\n\n2 9 1\n", line: 4, reasonContains: "entry (2, 9) is outside"),
        Bad(name: "missing value", text: header + "3 3 2\n1 1 1\n2 2\n", line: 4, reasonContains: "expected 3 fields"),
        Bad(name: "value not a number", text: header + "3 3 1\n1 1 one\n", line: 3, reasonContains: "`one` is not a finite real"),
        Bad(name: "value not finite", text: header + "3 3 1\n1 1 inf\n", line: 3, reasonContains: "not a finite real"),
        Bad(name: "index not an integer", text: header + "3 3 1\n1.5 1 1\n", line: 3, reasonContains: "not integers"),
        Bad(name: "integer field with a real", text: "%%MatrixMarket matrix coordinate integer general\n2 2 1\n1 1 2.5\n", line: 3, reasonContains: "not an integer"),
        Bad(name: "too few entries", text: header + "3 3 3\n1 1 1\n2 2 2\n", line: 5, reasonContains: "expected 3 entries, found 2"),
        Bad(name: "too many entries", text: header + "3 3 1\n1 1 1\n2 2 2\n", line: 4, reasonContains: "more entries than the 1"),
        Bad(name: "pattern with a value", text: "%%MatrixMarket matrix coordinate pattern general\n2 2 1\n1 1 3\n", line: 3, reasonContains: "expected 2 fields"),
        Bad(name: "symmetric upper entry", text: "%%MatrixMarket matrix coordinate real symmetric\n3 3 2\n1 1 1\n1 3 2\n", line: 4, reasonContains: "above the diagonal"),
        Bad(name: "symmetric not square", text: "%%MatrixMarket matrix coordinate real symmetric\n3 4 1\n1 1 1\n", line: 2, reasonContains: "must be square"),
        Bad(name: "skew diagonal", text: "%%MatrixMarket matrix coordinate real skew-symmetric\n3 3 1\n2 2 1\n", line: 3, reasonContains: "on the diagonal"),
        // Hostile sizes and values (issue 13): errors, not crashes or silent wrong answers.
        Bad(name: "a billion entries announced", text: header + "2 2 1073741822\n1 1 1\n", line: 4, reasonContains: "expected 1073741822 entries, found 1"),
        Bad(name: "rows past any binding", text: header + "2147483646 2147483646 1\n1 1 1\n", line: 2, reasonContains: "row offsets"),
        Bad(name: "value beyond f32", text: header + "2 2 1\n1 1 1e39\n", line: 3, reasonContains: "beyond f32's range"),
        Bad(name: "duplicates summing past f32", text: header + "2 2 2\n1 1 3e38\n1 1 3e38\n", line: 4, reasonContains: "sum to"),
        Bad(name: "NUL inside a value", text: header + "2 2 1\n1 1 -2\u{0}.0\n", line: 3, reasonContains: "control character"),
        Bad(name: "hexadecimal value", text: header + "2 2 1\n1 1 0x1p3\n", line: 3, reasonContains: "not a finite real"),
        Bad(name: "nan value", text: header + "2 2 1\n1 1 nan\n", line: 3, reasonContains: "not a finite real"),
    ]

    @Test(arguments: bad)
    func errorsNameTheLine(b: Bad) {
        do {
            _ = try MatrixMarket.parse(b.text)
            Issue.record("\(b.name): accepted")
        } catch let error as MatrixMarketError {
            #expect(error.line == b.line, "\(b.name): \(error)")
            #expect(error.reason.contains(b.reasonContains), "\(b.name): \(error)")
            #expect(error.description.contains(":\(b.line):"), "\(b.name): \(error)")
        } catch {
            Issue.record("\(b.name): untyped error \(error)")
        }
    }

    @Test func readsFilesAndNamesMissingOnes() throws {
        let seed = testSeed()
        let path = "/tmp/vkattn-mtx-\(seed).mtx"
        let text = "%%MatrixMarket matrix coordinate real general\n2 3 2\n2 3 1.5\n1 1 -1\n"
        #if canImport(Glibc)
        let file = fopen(path, "wb")
        #expect(file != nil)
        if let file {
            _ = text.utf8CString.withUnsafeBufferPointer { fwrite($0.baseAddress, 1, $0.count - 1, file) }
            fclose(file)
        }
        defer { unlink(path) }
        #endif
        let a = try MatrixMarket.read(path: path)
        #expect(a.rowOffsets == [0, 1, 2] && a.columnIndices == [0, 2] && a.values == [-1, 1.5])
        #expect(throws: MatrixMarketError.self) { _ = try MatrixMarket.read(path: path + ".missing") }
        do {
            _ = try MatrixMarket.read(path: path + ".missing")
        } catch let error as MatrixMarketError {
            #expect(error.line == 0 && error.path == path + ".missing" && error.description.hasPrefix(path))
        }
    }

    @Test func parsedMatrixMultipliesOnTheDevice() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var lines = ["%%MatrixMarket matrix coordinate real symmetric", "% generated", "40 40 120"]
        var used = Set<Int>()
        while lines.count < 123 {
            let i = Int.random(in: 1...40, using: &rng), j = Int.random(in: 1...40, using: &rng)
            let (r, c) = (max(i, j), min(i, j))
            guard used.insert(r * 100 + c).inserted else { continue }
            lines.append("\(r) \(c) \(rng.floats(1)[0])")
        }
        let a = try MatrixMarket.parse(lines.joined(separator: "\n"))
        let b = rng.floats(40 * 6)
        try withDevice { device in
            let plan = try SpMMPlan(try device.makeCSR(a), n: 6)
            let bt = try device.makeTensor(b, shape: [40, 6])
            let c = try GuardedTensor(device, shape: [40, 6], values: nil)
            let stream = try device.makeStream()
            try plan.encode(b: bt, c: c.tensor, on: stream)
            try stream.synchronize()
            let error = SparseReference.spmm(a, b: b, n: 6).maxError(of: try c.read())
            #expect(error <= 1e-5, "seed \(seed)")
        }
    }
}
