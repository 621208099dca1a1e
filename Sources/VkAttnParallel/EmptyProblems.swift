import VkAttn

// Empty problems across ranks (docs/PARALLEL.md, "Empty inputs"). A context-parallel op
// whose problem every rank recognises as empty from what it is given (no query heads, no
// tokens in the whole plan, batch 0, an empty recurrent state) returns at once on every rank:
// no kernel, no message, so no rank waits on a peer. The few outputs that are not empty even
// so are written by transfer commands (fills), as the one-device ops do.

/// Records a zero fill of every non-empty tensor of `tensors` on a stream of `device` and
/// waits for it; records nothing (and makes no stream) when all are empty.
/// - Parameters:
///   - tensors: The outputs to zero.
///   - device: Their device.
/// - Throws: Device errors of the fills.
func recordZeros(_ tensors: [Tensor], on device: Device) async throws {
    guard tensors.contains(where: { !$0.isEmpty }) else { return }
    let stream = try device.makeStream()
    for t in tensors { try t.recordFill(bits: 0, on: stream) }
    // A blocking wait (the fills are tiny): an awaited completion's waiter could keep the
    // stream, and with it the tensors, alive a moment after this returns.
    try stream.synchronize()
}
