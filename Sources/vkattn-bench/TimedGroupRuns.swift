import Foundation
import VkAttn
import VkAttnParallel

/// One timed run of an in-process parallel call: its span, every rank's intervals and traffic.
struct TimedRun {
    let spanMs: Double
    let intervals: [ParallelTimeline.Interval]
    let traffic: [RankTraffic]
}

/// Warm-up runs (not recorded), then timed runs, fewer when slow (about 60 s of runs, never
/// fewer than 3 unless --iterations says so); each run's intervals and traffic.
func timedGroupRuns(_ group: DeviceGroup, measure: MeasureOptions,
                    _ body: @escaping @Sendable () async throws -> String) throws -> (runs: [TimedRun], path: String) {
    group.timeline.isRecording = false
    var warmSeconds = 0.0
    for _ in 0..<max(1, measure.warmup) {
        let start = Date()
        _ = try blocking(body)
        warmSeconds = Date().timeIntervalSince(start)
    }
    let count = min(measure.iterations, max(min(3, measure.iterations), Int(60 / max(warmSeconds, 1e-3))))
    group.timeline.isRecording = true
    defer { group.timeline.isRecording = false }
    var runs: [TimedRun] = []
    var path = ""
    for _ in 0..<count {
        _ = group.timeline.drain()
        group.resetTraffic()
        path = try blocking(body)
        let intervals = group.timeline.drain()
        runs.append(TimedRun(spanMs: OverlapReport(intervals).spanNs / 1e6, intervals: intervals, traffic: group.traffic))
    }
    return (runs, path)
}

/// --timeline: the Chrome trace of the last timed run, one row per device of the group.
func writeGroupTimeline(_ file: String?, _ group: DeviceGroup, _ runs: [TimedRun]) throws {
    guard let file, let last = runs.last else { return }
    let names = Dictionary(uniqueKeysWithValues: group.devices.indices.map { ($0, "rank \($0): \(group.devices[$0].label)") })
    try ParallelTimeline.chromeTrace(last.intervals, rankNames: names).write(toFile: file, atomically: true, encoding: .utf8)
    note("timeline: \(last.intervals.count) intervals of the last timed run written to \(file)")
}
