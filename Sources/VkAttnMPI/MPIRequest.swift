import Synchronization
import VkAttn
import VkAttnParallel

/// A posted send, receive or collective of an `MPICommunicator`.
public final class MPIRequest: CommunicationRequest {
    /// Which operation a request is.
    public enum Kind: String, Sendable { case send, receive, collective }

    /// Send, receive or collective.
    public let kind: Kind
    /// The bytes the operation moves (a collective: what this rank receives).
    public let bytes: Int
    /// The other rank (in the posting communicator); -1 for a collective.
    public let peer: Int
    /// Signaled by the engine thread with `value` once the source is read (send) or the bytes
    /// are in the destination (receive, collective).
    let semaphore: TimelineSemaphore
    let value: UInt64
    let event = HostEvent()
    /// Staged receive: the host-visible buffer the engine fills, and where `complete` copies it.
    let staging: Buffer?
    let destination: BufferSlice?
    /// Staged receive: whether a `complete` has recorded the copy out of staging.
    let copiedOut = Mutex(false)

    init(kind: Kind, bytes: Int, peer: Int, semaphore: TimelineSemaphore, value: UInt64, staging: Buffer? = nil,
         destination: BufferSlice? = nil) {
        self.kind = kind
        self.bytes = bytes
        self.peer = peer
        self.semaphore = semaphore
        self.value = value
        self.staging = staging
        self.destination = destination
    }

    /// Returns when the engine has finished the operation on the host side.
    /// - Throws: The operation's error: an MPI failure, a size mismatch, a peer's abort
    ///   (``MPIError/peerFailed(rank:cause:)``), a timeout (``MPIError/timeout(op:rank:seconds:)``).
    public func wait() async throws { try await event.wait() }

    /// Whether the engine has finished the operation (successfully or not).
    public var isDone: Bool { event.isDone }
}
