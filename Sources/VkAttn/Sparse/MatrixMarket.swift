/// A Matrix Market file that cannot be read: the 1-based line (0 when the file itself could
/// not be opened) and why.
public struct MatrixMarketError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The 1-based line, or 0 for the file as a whole.
    public var line: Int
    /// What is wrong.
    public var reason: String
    /// The file, when read from one.
    public var path: String?

    /// - Parameters:
    ///   - line: The 1-based line, or 0.
    ///   - reason: What is wrong.
    ///   - path: The file, if any.
    public init(line: Int, reason: String, path: String? = nil) {
        self.line = line
        self.reason = reason
        self.path = path
    }

    /// `path:line: reason`.
    public var description: String {
        "\(path ?? "Matrix Market input"):\(line): \(reason)"
    }
}

/// Reader of Matrix Market (.mtx) coordinate files: fields real, integer and pattern
/// (values 1); symmetry general, symmetric and skew-symmetric (the stored lower triangle is
/// mirrored). Duplicate entries are summed (in fp64, then rounded once). Values must be finite
/// in f32, alone and summed; the size line is checked against what any Vulkan device can bind
/// before anything is allocated. Every problem is a `MatrixMarketError` naming the line.
public enum MatrixMarket {
    /// The banner's field: `real`, `integer` or `pattern` (every value 1).
    public enum Field: String, Sendable { case real, integer, pattern }
    /// The banner's symmetry: `general`, `symmetric` or `skew-symmetric`.
    public enum Symmetry: String, Sendable { case general, symmetric, skewSymmetric = "skew-symmetric" }

    /// Parses the text of a .mtx file into CSR (rows and columns as the file's size line says).
    /// - Parameter text: The whole file.
    /// - Returns: The matrix, columns sorted within each row, duplicates summed.
    /// - Throws: ``MatrixMarketError`` naming the first bad line.
    public static func parse(_ text: String) throws -> CSRArrays {
        try parse(bytes: Array(text.utf8))
    }

    /// Reads and parses the file at `path`.
    /// - Parameter path: A file path.
    /// - Returns: The matrix.
    /// - Throws: ``MatrixMarketError`` with the path: line 0 when the file cannot be read.
    public static func read(path: String) throws -> CSRArrays {
        let bytes: [UInt8]
        do {
            bytes = try readFile(path)
        } catch let error as MatrixMarketError {
            throw MatrixMarketError(line: 0, reason: error.reason, path: path)
        }
        do {
            return try parse(bytes: bytes)
        } catch var error as MatrixMarketError {
            error.path = path
            throw error
        }
    }

    /// Parses the bytes of a .mtx file into CSR.
    /// - Parameter bytes: The whole file, UTF-8.
    /// - Returns: The matrix.
    /// - Throws: ``MatrixMarketError`` naming the first bad line.
    public static func parse(bytes: [UInt8]) throws -> CSRArrays {
        var lines = LineReader(bytes)
        guard let (bannerLine, banner) = lines.next() else {
            throw MatrixMarketError(line: 1, reason: "empty input, expected a %%MatrixMarket banner")
        }
        let (field, symmetry) = try parseBanner(banner, line: bannerLine)

        // Size line: the first line that is neither a comment nor blank.
        var sizeLine: (Int, [Substring])? = nil
        while let (number, text) = lines.next() {
            let tokens = tokenize(text)
            if tokens.isEmpty || tokens[0].hasPrefix("%") { continue }
            sizeLine = (number, tokens)
            break
        }
        guard let (sizeNumber, size) = sizeLine else {
            throw MatrixMarketError(line: lines.lineNumber + 1, reason: "missing the size line `rows cols entries`")
        }
        guard size.count == 3, let rows = Int(size[0]), let cols = Int(size[1]), let entries = Int(size[2]) else {
            throw MatrixMarketError(line: sizeNumber, reason: "size line must be `rows cols entries`, got `\(size.joined(separator: " "))`")
        }
        guard rows >= 1, cols >= 1, entries >= 0 else {
            throw MatrixMarketError(line: sizeNumber, reason: "size \(rows) x \(cols) with \(entries) entries is not valid")
        }
        guard rows < Int(Int32.max), cols < Int(Int32.max), entries < Int(Int32.max) / 2 else {
            throw MatrixMarketError(line: sizeNumber, reason: "size \(rows) x \(cols) with \(entries) entries does not fit 32-bit indices")
        }
        // Row offsets are (rows + 1) 32-bit words: past 4 GiB no Vulkan device can bind them
        // (maxStorageBufferRange is a 32-bit byte count), and allocating them would be the crash.
        guard rows < 1 << 30 else {
            throw MatrixMarketError(line: sizeNumber, reason: "\(rows) rows need \((rows + 1) * 4) bytes of row offsets, more than any Vulkan device binds (4 GiB)")
        }
        if symmetry != .general && rows != cols {
            throw MatrixMarketError(line: sizeNumber, reason: "a \(symmetry.rawValue) matrix must be square, got \(rows) x \(cols)")
        }

        var triplets: [(row: Int, col: Int, value: Double, line: Int)] = []
        // The announced count is not trusted for memory: an entry line takes at least 4 bytes.
        triplets.reserveCapacity(min(symmetry == .general ? entries : 2 * entries, bytes.count / 2 + 16))
        var read = 0
        while let (number, text) = lines.next() {
            let tokens = tokenize(text)
            if tokens.isEmpty || tokens[0].hasPrefix("%") { continue }
            if let bad = text.utf8.first(where: { $0 < 0x20 && $0 != 0x09 && $0 != 0x0D || $0 == 0x7F }) {
                throw MatrixMarketError(line: number, reason: "control character 0x\(String(bad, radix: 16)) in an entry line")
            }
            guard read < entries else {
                throw MatrixMarketError(line: number, reason: "more entries than the \(entries) the size line announced")
            }
            let expected = field == .pattern ? 2 : 3
            guard tokens.count == expected else {
                throw MatrixMarketError(line: number, reason: "expected \(expected) fields (\(field == .pattern ? "row col" : "row col value")), got \(tokens.count)")
            }
            guard let i = Int(tokens[0]), let j = Int(tokens[1]) else {
                throw MatrixMarketError(line: number, reason: "indices `\(tokens[0]) \(tokens[1])` are not integers")
            }
            guard (1...rows).contains(i), (1...cols).contains(j) else {
                throw MatrixMarketError(line: number, reason: "entry (\(i), \(j)) is outside 1...\(rows) x 1...\(cols)")
            }
            var value: Double = 1
            switch field {
            case .pattern: break
            case .integer:
                guard let v = Int(tokens[2]) else {
                    throw MatrixMarketError(line: number, reason: "value `\(tokens[2])` is not an integer")
                }
                value = Double(v)
            case .real:
                guard isDecimalReal(tokens[2]), let v = Double(tokens[2]), v.isFinite else {
                    throw MatrixMarketError(line: number, reason: "value `\(tokens[2])` is not a finite real number")
                }
                guard Float(v).isFinite else {
                    throw MatrixMarketError(line: number, reason: "value `\(tokens[2])` is beyond f32's range")
                }
                value = v
            }
            if symmetry != .general && j > i {
                throw MatrixMarketError(line: number, reason: "entry (\(i), \(j)) is above the diagonal of a \(symmetry.rawValue) matrix (only the lower triangle is stored)")
            }
            if symmetry == .skewSymmetric && i == j {
                throw MatrixMarketError(line: number, reason: "entry (\(i), \(j)) is on the diagonal of a skew-symmetric matrix")
            }
            triplets.append((i - 1, j - 1, value, number))
            if symmetry != .general && i != j {
                triplets.append((j - 1, i - 1, symmetry == .skewSymmetric ? -value : value, number))
            }
            read += 1
        }
        guard read == entries else {
            throw MatrixMarketError(line: lines.lineNumber + 1, reason: "expected \(entries) entries, found \(read)")
        }
        return CSRArrays(rows: rows, cols: cols, triplets: try summedDuplicates(triplets))
    }

    /// The entries with duplicates summed in fp64 and rounded to f32 once; a sum beyond f32's
    /// range names the line of its last term.
    static func summedDuplicates(_ triplets: [(row: Int, col: Int, value: Double, line: Int)]) throws -> [(row: Int, col: Int, value: Float)] {
        let sorted = triplets.sorted { ($0.row, $0.col, $0.line) < ($1.row, $1.col, $1.line) }
        var merged: [(row: Int, col: Int, value: Float)] = []
        merged.reserveCapacity(sorted.count)
        var at = 0
        while at < sorted.count {
            let (r, c) = (sorted[at].row, sorted[at].col)
            var sum = 0.0, end = at
            while end < sorted.count && sorted[end].row == r && sorted[end].col == c {
                sum += sorted[end].value
                end += 1
            }
            guard Float(sum).isFinite else {
                throw MatrixMarketError(line: sorted[end - 1].line, reason: "duplicate entries of (\(r + 1), \(c + 1)) sum to \(sum), beyond f32's range")
            }
            merged.append((r, c, Float(sum)))
            at = end
        }
        return merged
    }

    static func parseBanner(_ text: Substring, line: Int) throws -> (Field, Symmetry) {
        let tokens = tokenize(text).map { $0.lowercased() }
        guard tokens.first == "%%matrixmarket" else {
            throw MatrixMarketError(line: line, reason: "expected a `%%MatrixMarket matrix coordinate <field> <symmetry>` banner")
        }
        guard tokens.count == 5 else {
            throw MatrixMarketError(line: line, reason: "banner needs 4 words after %%MatrixMarket, got \(tokens.count - 1)")
        }
        guard tokens[1] == "matrix" else {
            throw MatrixMarketError(line: line, reason: "object `\(tokens[1])` is not supported (only `matrix`)")
        }
        guard tokens[2] == "coordinate" else {
            throw MatrixMarketError(line: line, reason: "format `\(tokens[2])` is not supported (only `coordinate`)")
        }
        guard let field = Field(rawValue: tokens[3]) else {
            throw MatrixMarketError(line: line, reason: "field `\(tokens[3])` is not supported (real, integer or pattern)")
        }
        guard let symmetry = Symmetry(rawValue: tokens[4]) else {
            throw MatrixMarketError(line: line, reason: "symmetry `\(tokens[4])` is not supported (general, symmetric or skew-symmetric)")
        }
        return (field, symmetry)
    }

    /// Decimal notation only, as the format defines reals: [+-] digits [. digits] [(e|E) [+-] digits],
    /// with a digit before or after the point (Swift's `Double` also takes hex, inf and nan).
    static func isDecimalReal(_ token: Substring) -> Bool {
        var bytes = token.utf8[...]
        func digits() -> Int {
            let n = bytes.prefix { $0 >= 0x30 && $0 <= 0x39 }.count
            bytes = bytes.dropFirst(n)
            return n
        }
        if let first = bytes.first, first == 0x2B || first == 0x2D { bytes = bytes.dropFirst() }
        var mantissa = digits()
        if bytes.first == 0x2E {
            bytes = bytes.dropFirst()
            mantissa += digits()
        }
        guard mantissa > 0 else { return false }
        if let e = bytes.first, e == 0x65 || e == 0x45 {
            bytes = bytes.dropFirst()
            if let sign = bytes.first, sign == 0x2B || sign == 0x2D { bytes = bytes.dropFirst() }
            guard digits() > 0 else { return false }
        }
        return bytes.isEmpty
    }

    static func tokenize(_ line: Substring) -> [Substring] {
        line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
    }

    /// Lines of a byte buffer with their 1-based numbers (LF or CRLF endings).
    struct LineReader {
        let text: String
        var index: String.Index
        var lineNumber = 0

        init(_ bytes: [UInt8]) {
            text = String(decoding: bytes, as: UTF8.self)
            index = text.startIndex
        }

        mutating func next() -> (Int, Substring)? {
            guard index < text.endIndex else { return nil }
            // Bytewise: "\r\n" is one Character, so a Character search would miss it.
            let end = text.utf8[index...].firstIndex(of: UInt8(ascii: "\n")) ?? text.endIndex
            let line = text[index..<end]
            index = end < text.endIndex ? text.index(after: end) : end
            lineNumber += 1
            return (lineNumber, line)
        }
    }

    static func readFile(_ path: String) throws -> [UInt8] {
        #if canImport(Glibc) || canImport(Darwin)
        guard let file = fopen(path, "rb") else {
            throw MatrixMarketError(line: 0, reason: "cannot open the file (errno \(errno))")
        }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, file) }
            if count > 0 { bytes.append(contentsOf: chunk[0..<count]) }
            if count < chunk.count {
                if ferror(file) != 0 { throw MatrixMarketError(line: 0, reason: "read error (errno \(errno))") }
                break
            }
        }
        return bytes
        #else
        throw MatrixMarketError(line: 0, reason: "file reading is not available on this platform")
        #endif
    }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
