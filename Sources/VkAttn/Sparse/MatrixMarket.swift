/// A Matrix Market file that cannot be read: the 1-based line (0 when the file itself could
/// not be opened) and why.
public struct MatrixMarketError: Error, Equatable, Sendable, CustomStringConvertible {
    public var line: Int
    public var reason: String
    public var path: String?

    public init(line: Int, reason: String, path: String? = nil) {
        self.line = line
        self.reason = reason
        self.path = path
    }

    public var description: String {
        "\(path ?? "Matrix Market input"):\(line): \(reason)"
    }
}

/// Reader of Matrix Market (.mtx) coordinate files: fields real, integer and pattern
/// (values 1); symmetry general, symmetric and skew-symmetric (the stored lower triangle is
/// mirrored). Duplicate entries are summed. Every problem is a `MatrixMarketError` naming the
/// line.
public enum MatrixMarket {
    public enum Field: String, Sendable { case real, integer, pattern }
    public enum Symmetry: String, Sendable { case general, symmetric, skewSymmetric = "skew-symmetric" }

    /// Parses the text of a .mtx file into CSR (rows and columns as the file's size line says).
    public static func parse(_ text: String) throws -> CSRArrays {
        try parse(bytes: Array(text.utf8))
    }

    /// Reads and parses the file at `path`.
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
        if symmetry != .general && rows != cols {
            throw MatrixMarketError(line: sizeNumber, reason: "a \(symmetry.rawValue) matrix must be square, got \(rows) x \(cols)")
        }

        var triplets: [(row: Int, col: Int, value: Float)] = []
        triplets.reserveCapacity(symmetry == .general ? entries : 2 * entries)
        var read = 0
        while let (number, text) = lines.next() {
            let tokens = tokenize(text)
            if tokens.isEmpty || tokens[0].hasPrefix("%") { continue }
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
            var value: Float = 1
            switch field {
            case .pattern: break
            case .integer:
                guard let v = Int(tokens[2]) else {
                    throw MatrixMarketError(line: number, reason: "value `\(tokens[2])` is not an integer")
                }
                value = Float(v)
            case .real:
                guard let v = Double(tokens[2]), v.isFinite else {
                    throw MatrixMarketError(line: number, reason: "value `\(tokens[2])` is not a finite real number")
                }
                value = Float(v)
            }
            if symmetry != .general && j > i {
                throw MatrixMarketError(line: number, reason: "entry (\(i), \(j)) is above the diagonal of a \(symmetry.rawValue) matrix (only the lower triangle is stored)")
            }
            if symmetry == .skewSymmetric && i == j {
                throw MatrixMarketError(line: number, reason: "entry (\(i), \(j)) is on the diagonal of a skew-symmetric matrix")
            }
            triplets.append((i - 1, j - 1, value))
            if symmetry != .general && i != j {
                triplets.append((j - 1, i - 1, symmetry == .skewSymmetric ? -value : value))
            }
            read += 1
        }
        guard read == entries else {
            throw MatrixMarketError(line: lines.lineNumber + 1, reason: "expected \(entries) entries, found \(read)")
        }
        return CSRArrays(rows: rows, cols: cols, triplets: triplets)
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
