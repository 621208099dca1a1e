import VkAttn
/// One rank's compute intervals: GPU timestamps around each step's kernels, mapped to the
/// host clock once the stream is synchronized and recorded in the group's timeline.
struct RankTracer {
    let rank: Int
    let clock: GPUClock
    let timeline: ParallelTimeline?
    private var pending: [(start: Timestamp, end: Timestamp, label: String)] = []
    private var open: (start: Timestamp, label: String)?

    init(rank: Int, clock: GPUClock, timeline: ParallelTimeline?) {
        self.rank = rank
        self.clock = clock
        self.timeline = timeline
    }

    var enabled: Bool { timeline?.isRecording == true }

    /// Starts an interval (a barrier first, so the stamp follows the work before it).
    mutating func begin(_ label: String, on stream: Stream) throws {
        guard enabled else { return }
        try stream.barrier()
        open = (try stream.timestamp(), label)
    }

    mutating func end(on stream: Stream) throws {
        guard enabled, let open else { return }
        try stream.barrier()
        pending.append((open.start, try stream.timestamp(), open.label))
        self.open = nil
    }

    /// After `stream.synchronize()`: the intervals into the timeline.
    mutating func collect(_ stream: Stream) throws {
        defer { pending.removeAll() }
        guard let timeline else { return }
        for p in pending {
            timeline.record(.init(rank: rank, kind: .compute, label: p.label,
                                  startNs: clock.hostNanoseconds(ticks: try stream.ticks(of: p.start)),
                                  endNs: clock.hostNanoseconds(ticks: try stream.ticks(of: p.end))))
        }
    }
}
