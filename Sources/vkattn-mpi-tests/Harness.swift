import Glibc
import VkAttn
import VkAttnMPI
import VkAttnParallel

/// What one rank found: a line per check, failures marked.
final class Report {
    let rank: Int
    let seed: UInt64
    private(set) var lines: [String] = []
    private(set) var failures = 0

    init(rank: Int, seed: UInt64) {
        self.rank = rank
        self.seed = seed
    }

    /// Records `error <= bound` for one output of one check.
    func expect(_ what: String, error: Double, bound: Double) {
        let ok = error <= bound
        if !ok { failures += 1 }
        lines.append("\(ok ? "ok  " : "FAIL") rank \(rank) \(what): error \(error) (bound \(bound))")
    }

    func expect(_ what: String, _ ok: Bool, _ detail: String = "") {
        if !ok { failures += 1 }
        lines.append("\(ok ? "ok  " : "FAIL") rank \(rank) \(what)\(detail.isEmpty ? "" : ": \(detail)")")
    }
}

/// The test seed: VKATTN_SEED, else fresh from the clock (every rank takes rank 0's).
func freshSeed() -> UInt64 {
    if let raw = getenv("VKATTN_SEED"), let seed = UInt64(String(cString: raw)) { return seed }
    return HostClock.nanoseconds() & 0xFFFF_FFFF
}


func maxAbsError(_ a: [Float], _ b: [Double]) -> Double {
    guard a.count == b.count else { return .infinity }
    return zip(a, b).map { $0.isNaN ? .infinity : abs(Double($0) - $1) }.max() ?? 0
}

/// Submits `stream`, waits without blocking a pool thread, synchronizes.
func finish(_ stream: Stream) async throws {
    try await stream.completion()
}

/// A tensor poisoned with NaN inside a buffer with guard words on both sides.
struct Guarded {
    static let guardWords = 64
    static let guardValue: UInt32 = 0x5A5A_1234
    let tensor: Tensor
    let count: Int

    init(_ device: Device, shape: [Int], dtype: DType = .f32) throws {
        count = shape.reduce(1, *) * dtype.byteSize / 4
        let words = [UInt32](repeating: Self.guardValue, count: Self.guardWords)
            + [UInt32](repeating: Float.nan.bitPattern, count: count)
            + [UInt32](repeating: Self.guardValue, count: Self.guardWords)
        tensor = try Tensor(try device.makeBuffer(words), shape: shape, dtype: dtype, byteOffset: Self.guardWords * 4)
    }

    var intact: Bool {
        guard let words = try? tensor.buffer.read(UInt32.self, count: count + 2 * Self.guardWords) else { return false }
        return words.prefix(Self.guardWords).allSatisfy { $0 == Self.guardValue } && words.suffix(Self.guardWords).allSatisfy { $0 == Self.guardValue }
    }
}
