import CMPI
import VkAttn

/// A nonblocking MPI collective: once the stream's work so far (and `after`) is done and the
/// communicator's earlier collectives are posted (MPI matches collectives by order), `load`
/// fills the send block, `post` starts the collective; when MPI_Test reports it done, `store`
/// drains the receive block and the semaphore is signaled in posting order.
final class CollectiveOp: EngineOp, @unchecked Sendable {
    /// Starts the collective; returns host memory MPI reads until it completes (counts).
    typealias Post = @Sendable (EngineLoop, HostBlock, HostBlock, UnsafeMutablePointer<MPI_Request?>) throws -> [HostBlock]

    let ready: Submission?
    let after: [MPIRequest]
    let sendBytes: Int
    let receiveBytes: Int
    let load: @Sendable (HostBlock) throws -> Void
    let post: Post
    let store: @Sendable (HostBlock) throws -> Void
    private var blocks: (send: HostBlock, receive: HostBlock)?
    private var handle: MPI_Request?
    private var started: UInt64 = 0
    private var stored = false
    private var kept: [HostBlock] = []

    init(ready: Submission?, after: [MPIRequest], sendBytes: Int, receiveBytes: Int, load: @escaping @Sendable (HostBlock) throws -> Void,
         post: @escaping Post, store: @escaping @Sendable (HostBlock) throws -> Void, base: EngineOp.Base) {
        self.ready = ready
        self.after = after
        self.sendBytes = sendBytes
        self.receiveBytes = receiveBytes
        self.load = load
        self.post = post
        self.store = store
        super.init(request: base.request, key: base.key, comm: base.comm, label: base.label, timeoutSeconds: base.timeout,
                   timeline: base.timeline, globalRank: base.globalRank)
    }

    override func advance(_ loop: EngineLoop) throws -> Bool {
        if blocks == nil && !stored {
            guard loop.isNextPost(key, request.value), try loop.isReady(ready, after: after) else { return false }
            let made = (send: HostBlock(bytes: sendBytes), receive: HostBlock(bytes: receiveBytes))
            try load(made.send)
            blocks = made
            started = HostClock.nanoseconds()
            kept = try post(loop, made.send, made.receive, &handle)
            loop.posted[key] = request.value
            loop.progressed = true
        }
        if let blocks {
            guard try test(&handle, "MPI_Test(\(label))") else { return false }
            try store(blocks.receive)
            record(label, start: started, end: HostClock.nanoseconds(), bytes: sendBytes + receiveBytes)
            self.blocks = nil
            kept = []
            stored = true
        }
        guard stored, loop.isNextSignal(key, request.value) else { return false }
        try loop.signal(self)
        loop.count(sent: sendBytes, received: receiveBytes)
        request.event.succeed()
        return true
    }

    override func cancel() {
        guard handle != nil, handle != vkmpi_request_null() else { return }
        release(&handle, cancel: false)
        // MPI may still touch the blocks of a freed collective: keep them (aborts only).
        if let blocks { _ = Unmanaged.passRetained(blocks.send); _ = Unmanaged.passRetained(blocks.receive) }
        for k in kept { _ = Unmanaged.passRetained(k) }
    }
}
