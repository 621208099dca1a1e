import VkAttn
import Synchronization

/// Per-rank intervals of compute and copies on one host time axis (`HostClock` nanoseconds;
/// GPU timestamps mapped by each device's `GPUClock`), from which the overlap of
/// communication with compute is measured and a Chrome trace is written.
///
/// Sendable: the list is behind a lock; ranks and the host copy tasks record concurrently.
public final class ParallelTimeline: Sendable {
    /// What an interval measures.
    public enum Kind: String, Sendable, Hashable, Codable {
        /// Kernels of a rank (attention, merges, accumulations).
        case compute
        /// Bytes moving between ranks: GPU copies to and from staging, host copies.
        case copy
    }

    /// One recorded interval of one rank.
    public struct Interval: Sendable, Hashable {
        /// The rank (its global index in the group).
        public var rank: Int
        /// Compute or copy.
        public var kind: Kind
        /// What ran, e.g. the step's name or a copy's direction and tag.
        public var label: String
        /// The start, in host clock nanoseconds.
        public var startNs: Double
        /// The end, in host clock nanoseconds.
        public var endNs: Double
        /// Bytes moved (copies).
        public var bytes: Int

        /// - Parameters:
        ///   - rank: The rank.
        ///   - kind: Compute or copy.
        ///   - label: What ran.
        ///   - startNs: The start, host nanoseconds.
        ///   - endNs: The end, host nanoseconds.
        ///   - bytes: The bytes moved (copies).
        public init(rank: Int, kind: Kind, label: String, startNs: Double, endNs: Double, bytes: Int = 0) {
            self.rank = rank
            self.kind = kind
            self.label = label
            self.startNs = startNs
            self.endNs = max(startNs, endNs)
            self.bytes = bytes
        }

        /// The interval's length in nanoseconds.
        public var durationNs: Double { endNs - startNs }
    }

    private let storage = Mutex<[Interval]>([])
    private let enabled = Mutex(true)

    /// An empty timeline that records.
    public init() {}

    /// Whether intervals are kept (the bench turns recording off for warm-up runs).
    public var isRecording: Bool {
        get { enabled.withLock { $0 } }
        set { enabled.withLock { $0 = newValue } }
    }

    /// Appends `interval` while ``isRecording`` is on.
    /// - Parameter interval: The interval.
    public func record(_ interval: Interval) {
        guard isRecording else { return }
        storage.withLock { $0.append(interval) }
    }

    /// The intervals recorded so far.
    public var intervals: [Interval] { storage.withLock { $0 } }

    /// Returns the intervals recorded so far and forgets them.
    /// - Returns: The intervals, in recording order.
    public func drain() -> [Interval] {
        storage.withLock { list in
            defer { list.removeAll() }
            return list
        }
    }
}

/// How well one rank's (or all ranks') copies hide behind compute.
public struct OverlapReport: Sendable, Hashable {
    /// One rank's figures.
    public struct Rank: Sendable, Hashable {
        /// The rank.
        public var rank: Int
        /// Length of the union of the rank's compute intervals.
        public var computeNs: Double
        /// Length of the union of the rank's copy intervals.
        public var copyNs: Double
        /// Copy time not covered by the rank's compute.
        public var exposedNs: Double
        /// 1 - exposed / copy time (1 without copies).
        public var efficiency: Double { copyNs > 0 ? 1 - exposedNs / copyNs : 1 }
    }

    /// Per rank, in rank order.
    public var ranks: [Rank]
    /// First start to last end over every interval.
    public var spanNs: Double

    /// Copy time summed over the ranks.
    public var copyNs: Double { ranks.reduce(0) { $0 + $1.copyNs } }
    /// Exposed communication summed over the ranks.
    public var exposedNs: Double { ranks.reduce(0) { $0 + $1.exposedNs } }
    /// 1 - exposed / total copy time, over all ranks.
    public var efficiency: Double { copyNs > 0 ? 1 - exposedNs / copyNs : 1 }

    /// Measures `intervals`: per rank, the union of copy intervals minus the union of compute
    /// intervals is the exposed communication.
    /// - Parameter intervals: The intervals of one run (every rank).
    public init(_ intervals: [ParallelTimeline.Interval]) {
        let ranks = Set(intervals.map(\.rank)).sorted()
        self.ranks = ranks.map { rank in
            let mine = intervals.filter { $0.rank == rank }
            let compute = Self.union(mine.filter { $0.kind == .compute })
            let copies = Self.union(mine.filter { $0.kind == .copy })
            var exposed = 0.0
            for copy in copies {
                var covered = 0.0
                for c in compute { covered += max(0, min(copy.1, c.1) - max(copy.0, c.0)) }
                exposed += (copy.1 - copy.0) - covered
            }
            return Rank(rank: rank, computeNs: compute.reduce(0) { $0 + $1.1 - $1.0 },
                        copyNs: copies.reduce(0) { $0 + $1.1 - $1.0 }, exposedNs: max(0, exposed))
        }
        let start = intervals.map(\.startNs).min() ?? 0
        spanNs = (intervals.map(\.endNs).max() ?? 0) - start
    }

    /// Disjoint, sorted (start, end) pairs covering the intervals.
    static func union(_ intervals: [ParallelTimeline.Interval]) -> [(Double, Double)] {
        var merged: [(Double, Double)] = []
        for i in intervals.sorted(by: { $0.startNs < $1.startNs }) {
            if let last = merged.last, i.startNs <= last.1 {
                merged[merged.count - 1].1 = max(last.1, i.endNs)
            } else {
                merged.append((i.startNs, i.endNs))
            }
        }
        return merged
    }
}

extension ParallelTimeline {
    /// The intervals as a Chrome trace (the JSON object format of chrome://tracing and
    /// Perfetto): one process per rank, compute on thread 0 and copies on thread 1, complete
    /// ("X") events in microseconds from the first interval.
    /// - Parameters:
    ///   - intervals: The intervals to write.
    ///   - rankNames: Process names by rank (default `rank N`).
    /// - Returns: The JSON text.
    public static func chromeTrace(_ intervals: [Interval], rankNames: [Int: String] = [:]) -> String {
        let origin = intervals.map(\.startNs).min() ?? 0
        var events: [String] = []
        for rank in Set(intervals.map(\.rank)).sorted() {
            let name = rankNames[rank] ?? "rank \(rank)"
            events.append(#"{"ph":"M","name":"process_name","pid":\#(rank),"tid":0,"args":{"name":\#(jsonString(name))}}"#)
            events.append(#"{"ph":"M","name":"thread_name","pid":\#(rank),"tid":0,"args":{"name":"compute"}}"#)
            events.append(#"{"ph":"M","name":"thread_name","pid":\#(rank),"tid":1,"args":{"name":"copies"}}"#)
        }
        for i in intervals.sorted(by: { ($0.rank, $0.startNs) < ($1.rank, $1.startNs) }) {
            let ts = jsonNumber((i.startNs - origin) / 1000)
            let dur = jsonNumber(i.durationNs / 1000)
            events.append(#"{"ph":"X","name":\#(jsonString(i.label)),"cat":"\#(i.kind.rawValue)","pid":\#(i.rank),"tid":\#(i.kind == .compute ? 0 : 1),"ts":\#(ts),"dur":\#(dur),"args":{"bytes":\#(i.bytes)}}"#)
        }
        return "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n" + events.joined(separator: ",\n") + "\n]}\n"
    }

    static func jsonString(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default:
                if scalar.value < 0x20 {
                    let hex = String(scalar.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out + "\""
    }

    /// A finite decimal (JSON has no NaN or infinity).
    static func jsonNumber(_ x: Double) -> String {
        guard x.isFinite else { return "0" }
        let micro = (x * 1000).rounded() / 1000
        return "\(micro)"
    }
}
