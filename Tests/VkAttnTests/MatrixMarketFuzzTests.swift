import Testing
import VkAttn
import TestSupport

/// Seeded random mutations of valid Matrix Market files: every outcome is a `MatrixMarketError`
/// or a matrix identical to what an independent strict parser (below) reads from the same bytes.
@Suite("Matrix Market reader under mutation")
struct MatrixMarketFuzzTests {
    @Test func mutatedFilesAreErrorsOrStrictlyRight() throws {
        let seed = testSeed()
        var rng = SeededRandom(seed: seed)
        var accepted = 0, refused = 0
        for round in 0..<600 {
            var bytes = Self.validFile(&rng)
            let mutations = Int(rng.next() % 4)  // round 0 mod 4: the valid file itself
            for _ in 0..<mutations { Self.mutate(&bytes, &rng) }
            let reference = StrictMatrixMarket.parse(bytes)
            do {
                let got = try MatrixMarket.parse(bytes: bytes)
                accepted += 1
                guard let reference else {
                    Issue.record("round \(round): accepted what the strict parser refuses, seed \(seed): \(Self.show(bytes))")
                    continue
                }
                #expect(got.rows == reference.rows && got.cols == reference.cols && got.rowOffsets == reference.rowOffsets
                         && got.columnIndices == reference.columnIndices && got.values == reference.values,
                         "round \(round): differs from the strict parse, seed \(seed): \(Self.show(bytes))")
            } catch is MatrixMarketError {
                refused += 1
            } catch {
                Issue.record("round \(round): not a MatrixMarketError: \(error), seed \(seed)")
            }
        }
        #expect(accepted > 50 && refused > 50, "accepted \(accepted), refused \(refused): the mutations should do both, seed \(seed)")
    }

    static func show(_ bytes: [UInt8]) -> String {
        String(decoding: bytes.prefix(300), as: UTF8.self).debugDescription
    }

    /// A valid file: random field, symmetry, size, entries (duplicates included), comments, blank
    /// lines, spacing and line endings.
    static func validFile(_ rng: inout SeededRandom) -> [UInt8] {
        let fields = ["real", "integer", "pattern"], symmetries = ["general", "symmetric", "skew-symmetric"]
        let field = fields[Int(rng.next() % 3)], symmetry = symmetries[Int(rng.next() % 3)]
        let rows = 1 + Int(rng.next() % 9)
        let cols = symmetry == "general" ? 1 + Int(rng.next() % 9) : rows
        var entries: [(Int, Int)] = []
        for _ in 0..<Int(rng.next() % 12) {
            var i = 1 + Int(rng.next() % UInt64(rows)), j = 1 + Int(rng.next() % UInt64(cols))
            if symmetry != "general" && j > i { swap(&i, &j) }
            if symmetry == "skew-symmetric" && i == j { continue }
            entries.append((i, j))
        }
        let newline = rng.next() % 4 == 0 ? "\r\n" : "\n"
        var text = "%%MatrixMarket matrix coordinate \(rng.next() % 2 == 0 ? field : field.uppercased()) \(symmetry)" + newline
        if rng.next() % 2 == 0 { text += "% a comment" + newline }
        text += "\(rows) \(cols) \(entries.count)" + newline
        for (i, j) in entries {
            if rng.next() % 8 == 0 { text += newline }
            let gap = rng.next() % 3 == 0 ? "  \t" : " "
            var line = "\(i)\(gap)\(j)"
            switch field {
            case "real": line += gap + ["0.5", "-3", "1e-2", "2.5E+3", "-.75", "7.", "+4.125"][Int(rng.next() % 7)]
            case "integer": line += gap + String(Int(rng.next() % 201) - 100)
            default: break
            }
            text += line + newline
        }
        return Array(text.utf8)
    }

    static let alphabet: [UInt8] = Array("0123456789 \t\n\r-+.eE%x".utf8) + [0, 0xFF, 0x0B]
    static let tokens = ["1e39", "3e38", "99999999999999999999", "2147483646", "-1", "0", "1073741822", "inf", "0x10", "1.5", "nan"]

    static func mutate(_ bytes: inout [UInt8], _ rng: inout SeededRandom) {
        guard !bytes.isEmpty else { bytes = [alphabet[Int(rng.next() % UInt64(alphabet.count))]]; return }
        let at = Int(rng.next() % UInt64(bytes.count))
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
        switch rng.next() % 7 {
        case 0: bytes.remove(at: at)
        case 1: bytes.insert(alphabet[Int(rng.next() % UInt64(alphabet.count))], at: at)
        case 2: bytes[at] = alphabet[Int(rng.next() % UInt64(alphabet.count))]
        case 3:  // duplicate a line
            let l = Int(rng.next() % UInt64(lines.count))
            lines.insert(lines[l], at: l)
            bytes = Array(lines.joined(separator: [UInt8(ascii: "\n")]))
        case 4:  // drop a line
            lines.remove(at: Int(rng.next() % UInt64(lines.count)))
            bytes = Array(lines.joined(separator: [UInt8(ascii: "\n")]))
        case 5:  // swap two lines
            let a = Int(rng.next() % UInt64(lines.count)), b = Int(rng.next() % UInt64(lines.count))
            lines.swapAt(a, b)
            bytes = Array(lines.joined(separator: [UInt8(ascii: "\n")]))
        default:  // replace a whitespace-separated token with a hostile one
            var words = bytes.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false).map(Array.init)
            let w = Int(rng.next() % UInt64(words.count))
            let tail = words[w].firstIndex(of: UInt8(ascii: "\n")).map { Array(words[w][$0...]) } ?? []
            words[w] = Array(tokens[Int(rng.next() % UInt64(tokens.count))].utf8) + tail
            bytes = Array(words.joined(separator: [UInt8(ascii: " ")]))
        }
    }
}

/// An independent, strict reading of the Matrix Market coordinate format (the parts VkAttn
/// supports): returns nil for anything outside it. Written separately from the library's reader.
enum StrictMatrixMarket {
    static func parse(_ bytes: [UInt8]) -> CSRArrays? {
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map { line -> [UInt8] in
            Array(line)
        }
        guard !lines.isEmpty else { return nil }
        func words(_ line: [UInt8]) -> [[UInt8]] {
            line.split(whereSeparator: { $0 == 0x20 || $0 == 0x09 || $0 == 0x0D }).map(Array.init)
        }
        let banner = words(lines.removeFirst()).map { String(decoding: $0, as: UTF8.self).lowercased() }
        guard banner.count == 5, banner[0] == "%%matrixmarket", banner[1] == "matrix", banner[2] == "coordinate",
              ["real", "integer", "pattern"].contains(banner[3]),
              ["general", "symmetric", "skew-symmetric"].contains(banner[4]) else { return nil }
        let field = banner[3], symmetry = banner[4]
        // The rest: comment and blank lines skipped; the first other line is the size line.
        let body = lines.map(words).filter { !$0.isEmpty && $0[0].first != UInt8(ascii: "%") }
        let raw = lines.filter { let w = words($0); return !w.isEmpty && w[0].first != UInt8(ascii: "%") }
        guard let size = body.first, size.count == 3,
              let rows = integer(size[0]), let cols = integer(size[1]), let count = integer(size[2]),
              rows >= 1, cols >= 1, count >= 0, rows < 1 << 30, cols < Int(Int32.max), count < Int(Int32.max) / 2,
              symmetry == "general" || rows == cols else { return nil }
        let entryLines = Array(body.dropFirst()), entryRaw = Array(raw.dropFirst())
        guard entryLines.count == count else { return nil }
        var sums: [Int: [Int: Double]] = [:]
        for (tokens, line) in zip(entryLines, entryRaw) {
            guard !line.contains(where: { ($0 < 0x20 && $0 != 0x09 && $0 != 0x0D) || $0 == 0x7F }) else { return nil }
            guard tokens.count == (field == "pattern" ? 2 : 3), let i = integer(tokens[0]), let j = integer(tokens[1]),
                  i >= 1, i <= rows, j >= 1, j <= cols else { return nil }
            var value = 1.0
            if field == "integer" {
                guard let v = integer(tokens[2]) else { return nil }
                value = Double(v)
            } else if field == "real" {
                guard let v = decimal(tokens[2]), v.isFinite, Float(v).isFinite else { return nil }
                value = v
            }
            if symmetry != "general" && j > i { return nil }
            if symmetry == "skew-symmetric" && i == j { return nil }
            sums[i - 1, default: [:]][j - 1, default: 0] += value
            if symmetry != "general" && i != j { sums[j - 1, default: [:]][i - 1, default: 0] += symmetry == "skew-symmetric" ? -value : value }
        }
        var offsets: [Int32] = [0], columns: [Int32] = [], values: [Float] = []
        for r in 0..<rows {
            for (c, v) in (sums[r] ?? [:]).sorted(by: { $0.key < $1.key }) {
                guard Float(v).isFinite else { return nil }
                columns.append(Int32(c))
                values.append(Float(v))
            }
            offsets.append(Int32(columns.count))
        }
        return CSRArrays(rows: rows, cols: cols, rowOffsets: offsets, columnIndices: columns, values: values)
    }

    /// [+-]digits, within Int.
    static func integer(_ token: [UInt8]) -> Int? {
        var digits = token[...]
        var negative = false
        if let s = digits.first, s == UInt8(ascii: "+") || s == UInt8(ascii: "-") {
            negative = s == UInt8(ascii: "-")
            digits = digits.dropFirst()
        }
        guard !digits.isEmpty, digits.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
        var value = 0
        for d in digits {
            let (m, o1) = value.multipliedReportingOverflow(by: 10)
            let (a, o2) = m.addingReportingOverflow(Int(d - 0x30))
            guard !o1, !o2 else { return nil }
            value = a
        }
        return negative ? -value : value
    }

    /// Decimal notation: sign, digits with an optional point (a digit on one side), optional
    /// exponent with digits.
    static func decimal(_ token: [UInt8]) -> Double? {
        var state = 0  // 0 sign, 1 integer digits, 2 fraction digits, 3 exponent sign, 4 exponent digits
        var mantissaDigits = 0, exponentDigits = 0
        for (n, b) in token.enumerated() {
            switch b {
            case UInt8(ascii: "+"), UInt8(ascii: "-"):
                guard (state == 0 && n == 0) || (state == 3 && exponentDigits == 0) else { return nil }
                if state == 0 { state = 1 }
            case 0x30...0x39:
                if state == 0 { state = 1 }
                if state == 3 { state = 4 }
                if state == 4 { exponentDigits += 1 } else { mantissaDigits += 1 }
            case UInt8(ascii: "."):
                guard state <= 1 else { return nil }
                state = 2
            case UInt8(ascii: "e"), UInt8(ascii: "E"):
                guard state <= 2, mantissaDigits > 0 else { return nil }
                state = 3
            default:
                return nil
            }
        }
        guard mantissaDigits > 0, state < 3 || exponentDigits > 0 else { return nil }
        return Double(String(decoding: token, as: UTF8.self))
    }
}
