import Foundation
import Testing
import VkAttn
import VkAttnParallel
import TestSupport

/// Overlap measurement and the Chrome trace.
@Suite("Parallel: timeline and overlap")
struct ParallelTimelineTests {
    @Test func overlapCountsOnlyCopyTimeOutsideCompute() {
        typealias I = ParallelTimeline.Interval
        let intervals = [
            I(rank: 0, kind: .compute, label: "a", startNs: 0, endNs: 100),
            I(rank: 0, kind: .compute, label: "b", startNs: 150, endNs: 200),
            I(rank: 0, kind: .copy, label: "x", startNs: 50, endNs: 170),   // 30 exposed (100..150)
            I(rank: 0, kind: .copy, label: "y", startNs: 60, endNs: 80),    // inside x: union
            I(rank: 1, kind: .copy, label: "z", startNs: 0, endNs: 10),     // no compute: all exposed
        ]
        let report = OverlapReport(intervals)
        #expect(report.ranks.count == 2)
        #expect(report.ranks[0].copyNs == 120 && report.ranks[0].exposedNs == 50)
        #expect(abs(report.ranks[0].efficiency - (1 - 50.0 / 120)) < 1e-12)
        #expect(report.ranks[1].exposedNs == 10 && report.ranks[1].efficiency == 0)
        #expect(report.spanNs == 200)
        #expect(abs(report.efficiency - (1 - 60.0 / 130)) < 1e-12)
    }

    /// Every path records copies on every rank: host copies (host-mapped, staged) and the GPU
    /// copies to and from staging (staged, imported-host, with timestamps).
    @Test(arguments: TransferRoute.allCases)
    func ringRecordsComputeAndCopiesOnEveryRankAndWritesAValidTrace(path: TransferRoute) async throws {
        let seed = testSeed()
        try await withGroup(ranks: 3, path: path) { group in
            #expect(group.route == path)
            let c = ParallelCase(seed: seed, lengths: [200], headsQ: 2, headsKV: 2, causal: true)
            _ = group.timeline.drain()
            _ = try await c.parallel(try group.communicators(), sharding: .zigzag, scheme: .ring, backward: true)
            let intervals = group.timeline.drain()
            for rank in 0..<3 {
                #expect(intervals.contains { $0.rank == rank && $0.kind == .compute }, "rank \(rank) has no compute interval")
                #expect(intervals.contains { $0.rank == rank && $0.kind == .copy && $0.bytes > 0 }, "rank \(rank) has no copy interval (\(path))")
            }
            #expect(intervals.allSatisfy { $0.endNs >= $0.startNs && $0.startNs > 0 })
            let report = OverlapReport(intervals)
            #expect(report.efficiency >= 0 && report.efficiency <= 1)
            let trace = ParallelTimeline.chromeTrace(intervals, rankNames: [0: "rank 0 \"lavapipe\""])
            let json = try JSONSerialization.jsonObject(with: Data(trace.utf8)) as? [String: Any]
            let events = json?["traceEvents"] as? [[String: Any]] ?? []
            #expect(events.filter { $0["ph"] as? String == "X" }.count == intervals.count)
            #expect(events.allSatisfy { $0["pid"] is Int && $0["ph"] is String })
            let traffic = group.traffic
            #expect(traffic.allSatisfy { $0.bytesSent > 0 && $0.bytesReceived > 0 })
        }
    }
}
