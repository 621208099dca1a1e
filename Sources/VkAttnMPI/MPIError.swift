import CMPI

/// Failures of the MPI backend.
public enum MPIError: Error, CustomStringConvertible, Sendable {
    /// An MPI call returned an error code.
    case call(String, code: Int32, message: String)
    /// Another rank aborted the group: its world rank and its error.
    case peerFailed(rank: Int, cause: String)
    /// A request did not complete within the timeout (VKATTN_MPI_TIMEOUT).
    case timeout(op: String, rank: Int, seconds: Double)
    /// MPI could not give the thread level the engine needs.
    case threadLevel(provided: Int32)
    /// The engine is shut down (MPI finalized).
    case finalized

    /// One line starting `MPI:`, naming the call, rank or limit.
    public var description: String {
        switch self {
        case let .call(name, code, message): "MPI: \(name) failed (\(code)): \(message)"
        case let .peerFailed(rank, cause): "MPI: rank \(rank) failed: \(cause)"
        case let .timeout(op, rank, seconds): "MPI: rank \(rank): \(op) did not complete within \(seconds) s (VKATTN_MPI_TIMEOUT)"
        case let .threadLevel(provided): "MPI: the library provides thread level \(provided); the engine needs MPI_THREAD_FUNNELED or higher"
        case .finalized: "MPI: the engine is shut down"
        }
    }
}

/// Throws `MPIError.call` unless `code` is MPI_SUCCESS.
func mpiCheck(_ code: Int32, _ name: String) throws {
    guard code != vkmpi_success() else { return }
    var buffer = [CChar](repeating: 0, count: Int(vkmpi_max_error_string()) + 1)
    var length: Int32 = 0
    MPI_Error_string(code, &buffer, &length)
    throw MPIError.call(name, code: code, message: String(decoding: buffer.prefix(Int(length)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
}
