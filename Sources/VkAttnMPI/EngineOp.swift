import CMPI
import VkAttn
import VkAttnParallel

/// One posted operation as the engine thread advances it.
///
/// @unchecked Sendable: the `let` properties are set on the posting thread before the
/// operation is handed over through `EngineCore`'s lock; every `var` is touched only by the
/// engine thread after that hand-over.
class EngineOp: @unchecked Sendable {
    let request: MPIRequest
    let key: ChannelKey
    let comm: CommHandle
    let label: String
    let deadline: UInt64
    let timeline: ParallelTimeline?
    let globalRank: Int

    init(request: MPIRequest, key: ChannelKey, comm: CommHandle, label: String, timeoutSeconds: Double,
         timeline: ParallelTimeline?, globalRank: Int) {
        self.request = request
        self.key = key
        self.comm = comm
        self.label = label
        self.deadline = HostClock.nanoseconds() + UInt64(timeoutSeconds * 1e9)
        self.timeline = timeline
        self.globalRank = globalRank
    }

    /// Called once when the engine takes the operation.
    func start(_ loop: EngineLoop) throws {}

    /// Moves the operation on; true once its request has succeeded.
    func advance(_ loop: EngineLoop) throws -> Bool { true }

    /// Releases MPI requests and host memory of an operation that will not finish.
    func cancel() {}

    /// Records a copy interval (host nanoseconds) when the timeline is recording.
    func record(_ what: String, start: UInt64, end: UInt64, bytes: Int) {
        guard let timeline, timeline.isRecording else { return }
        timeline.record(.init(rank: globalRank, kind: .copy, label: what, startNs: Double(start), endNs: Double(end), bytes: bytes))
    }
}

/// A host block for MPI, filled from or drained into device memory.
final class HostBlock {
    let pointer: UnsafeMutableRawPointer
    let bytes: Int

    init(bytes: Int) {
        self.bytes = bytes
        pointer = .allocate(byteCount: max(bytes, 1), alignment: 64)
    }

    deinit { pointer.deallocate() }

    /// Reads `slices` one after another into the block, starting at `offset` (after the GPU
    /// work that wrote them: the caller checked its submission).
    func load(_ slices: [BufferSlice], at offset: Int = 0) throws {
        var at = offset
        for s in slices {
            let values = try s.buffer.read(UInt8.self, count: s.byteCount, at: s.offset)
            values.withUnsafeBytes { if let base = $0.baseAddress { (pointer + at).copyMemory(from: base, byteCount: s.byteCount) } }
            at += s.byteCount
        }
    }

    /// Writes consecutive ranges of the block into `slices`, starting at `offset`.
    func store(_ slices: [BufferSlice], at offset: Int = 0) throws {
        var at = offset
        for s in slices {
            try s.buffer.write(Array(UnsafeRawBufferPointer(start: pointer + at, count: s.byteCount)), at: s.offset)
            at += s.byteCount
        }
    }
}

/// MPI_Test on `request`; true when it completed (the handle becomes MPI_REQUEST_NULL).
func test(_ request: inout MPI_Request?, status: UnsafeMutablePointer<MPI_Status>? = nil, _ name: String) throws -> Bool {
    var flag: Int32 = 0
    try mpiCheck(MPI_Test(&request, &flag, status ?? vkmpi_status_ignore()), name)
    return flag != 0
}

/// Frees an active request (a pending receive is cancelled first).
func release(_ request: inout MPI_Request?, cancel: Bool) {
    guard request != nil, request != vkmpi_request_null() else { return }
    if cancel { MPI_Cancel(&request) }
    MPI_Request_free(&request)
}

/// A message's length as MPI's count, or a typed error past 2 GiB.
func mpiCount(_ bytes: Int, op: String) throws -> Int32 {
    guard bytes >= 0, bytes <= Int(Int32.max) else {
        throw VkAttnError.invalidValue(op: op, operand: "bytes", reason: "\(bytes) bytes exceed one MPI message (2 GiB); split it")
    }
    return Int32(bytes)
}

/// A send: once the stream's work so far (and `after`) is done, the source is read into a
/// host block and MPI_Isend posted (in posting order per peer and tag, which MPI's
/// non-overtaking rule then keeps); the send's semaphore is signaled at once, since the
/// source has been read.
final class SendOp: EngineOp, @unchecked Sendable {
    let source: BufferSlice
    let ready: Submission
    let after: [MPIRequest]
    let peer: Int32
    let tag: Int32
    private var block: HostBlock?
    private var handle: MPI_Request?
    private var posted: UInt64 = 0

    init(source: BufferSlice, ready: Submission, after: [MPIRequest], peer: Int, tag: Int, base: EngineOp.Base) {
        self.source = source
        self.ready = ready
        self.after = after
        self.peer = Int32(peer)
        self.tag = Int32(tag)
        super.init(request: base.request, key: base.key, comm: base.comm, label: base.label, timeoutSeconds: base.timeout,
                   timeline: base.timeline, globalRank: base.globalRank)
    }

    override func advance(_ loop: EngineLoop) throws -> Bool {
        if block == nil {
            guard loop.isNextPost(key, request.value), try loop.isReady(ready, after: after) else { return false }
            let made = HostBlock(bytes: source.byteCount)
            try made.load([source])
            block = made
            posted = HostClock.nanoseconds()
            try mpiCheck(MPI_Isend(made.pointer, try mpiCount(made.bytes, op: label), vkmpi_byte(), peer, tag, comm.raw, &handle), "MPI_Isend")
            loop.posted[key] = request.value
            try loop.signal(self)
        }
        guard try test(&handle, "MPI_Test(send)") else { return false }
        record(label, start: posted, end: HostClock.nanoseconds(), bytes: source.byteCount)
        block = nil
        loop.count(sent: source.byteCount)
        loop.progressed = true
        request.event.succeed()
        return true
    }

    override func cancel() {
        guard handle != nil, handle != vkmpi_request_null() else { return }
        release(&handle, cancel: false)
        // MPI may still read the block of a freed send: keep it (aborts only; the process ends).
        if let block { _ = Unmanaged.passRetained(block) }
    }
}

/// A receive: MPI_Irecv into a host block as soon as the engine takes it; once the message is
/// in and the destination free (the stream's work at posting, and `after`; a private staging
/// buffer of the staged path is always free), the block is
/// written into the destination and the semaphore signaled in posting order.
final class ReceiveOp: EngineOp, @unchecked Sendable {
    let destination: BufferSlice
    let free: Submission?
    let after: [MPIRequest]
    let peer: Int32
    let tag: Int32
    private var block: HostBlock?
    private var handle: MPI_Request?
    private var arrived = false
    private var stored = false

    init(destination: BufferSlice, free: Submission?, after: [MPIRequest], peer: Int, tag: Int, base: EngineOp.Base) {
        self.destination = destination
        self.free = free
        self.after = after
        self.peer = Int32(peer)
        self.tag = Int32(tag)
        super.init(request: base.request, key: base.key, comm: base.comm, label: base.label, timeoutSeconds: base.timeout,
                   timeline: base.timeline, globalRank: base.globalRank)
    }

    override func start(_ loop: EngineLoop) throws {
        let made = HostBlock(bytes: destination.byteCount)
        block = made
        try mpiCheck(MPI_Irecv(made.pointer, try mpiCount(made.bytes, op: label), vkmpi_byte(), peer, tag, comm.raw, &handle), "MPI_Irecv")
    }

    override func advance(_ loop: EngineLoop) throws -> Bool {
        if !arrived {
            var status = MPI_Status()
            guard try test(&handle, status: &status, "MPI_Test(receive)") else { return false }
            var count: Int32 = 0
            MPI_Get_count(&status, vkmpi_byte(), &count)
            guard Int(count) == destination.byteCount else {
                throw VkAttnError.invalidValue(op: "communicator", operand: "message",
                                               reason: "\(label): a send of \(count) bytes met a receive of \(destination.byteCount) bytes")
            }
            arrived = true
            loop.progressed = true
        }
        if !stored {
            guard try loop.isReady(free, after: after), let block else { return false }
            let start = HostClock.nanoseconds()
            try block.store([destination])
            record(label, start: start, end: HostClock.nanoseconds(), bytes: destination.byteCount)
            self.block = nil
            stored = true
        }
        guard loop.isNextSignal(key, request.value) else { return false }
        try loop.signal(self)
        loop.count(received: destination.byteCount)
        request.event.succeed()
        return true
    }

    override func cancel() {
        guard handle != nil, handle != vkmpi_request_null() else { return }
        release(&handle, cancel: true)
        // A receive matched before the cancel may still be written: keep its block (aborts only).
        if let block { _ = Unmanaged.passRetained(block) }
    }
}

extension EngineOp {
    /// What every operation carries, gathered by the communicator.
    struct Base {
        var request: MPIRequest
        let key: ChannelKey
        let comm: CommHandle
        let label: String
        let timeout: Double
        let timeline: ParallelTimeline?
        let globalRank: Int
    }
}
