import VkAttn
import VulkanCompute
import VkAttnShaders

/// What a rank's `ContextParallelRecurrence` call did.
public struct RecurrenceShardOutput: Sendable {
    /// The schedule, e.g. `lasp2 x3 forward: chained-lookback/BLD/u64x2/chunk64 + cumulative
    /// decay (the same kernel on b = 0, h0 = 1) + carry added in place, host-mapped`.
    public let path: String
    /// The local recurrence's dispatch (the first of the two local passes).
    public let local: RecurrenceDispatch
    /// Bytes and messages this rank sent during the call.
    public let bytesSent: Int
    /// Messages this rank sent during the call.
    public let messagesSent: Int
    /// Whether this rank ran the cumulative-decay pass and the carry (every rank but the
    /// first of the flow: rank 0 of a forward recurrence's forward pass).
    public let decayPass: Bool
}

/// The linear recurrence h_t = a_t h_{t-1} + b_t (`LinearRecurrence`, real or complex,
/// forward or reversed in time) with the time axis sharded contiguously over the ranks of a
/// communicator: rank r holds steps [s_r, s_r + L_r) of every channel (any L_r >= 1; lengths
/// may differ), as tensors of the op's layout ([B, L_r, D] or [B, D, L_r], complex: plus
/// [2]); states are [B, D] (+ [2]).
///
/// A shard is an affine map per channel, S -> A S + B (A the product of its a, B its local
/// final state from zero), so the state entering rank r is the exclusive scan of the maps
/// (LASP, LASP-2, ZeCO all use this; `algorithm` picks how it moves):
/// 1. the local recurrence from h0 = 0 (the first rank: the global h0) gives h^loc and B;
///    the same kernel on b = 0, h0 = 1 gives the cumulative decay P_t = prod_{s <= t} a_s
///    and A (a second local pass instead of a per-time loop or a rerun after the scan);
/// 2. `allScan` of the rows [A, B] (`AffineScan`, complex: `ComplexAffineScan`, width 1, one
///    row per channel) gives the incoming state h_in (the identity on the first rank);
/// 3. h_t = h^loc_t + P_t h_in, one elementwise kernel (no pass over time after the scan).
/// The first shard of the flow has nothing before it: its map is the constant B (A = 0), so it
/// runs neither the decay pass nor the carry (`RecurrenceShardOutput.decayPass`).
/// Backward: the gradient flows from the last rank to the first; the map of rank r takes the
/// gradient arriving at its end to the one leaving its start (dh_in = A dEnd + G, G the local
/// backward's dh0), so a scan of the same affine maps on the reversed ranks (`subgroup`) gives
/// each rank its dEnd; the local backward (dFinal = 0, the last rank: the global dFinal) is
/// corrected by Q_t dEnd with Q_t = prod_{t < s} a_s (the backward kernel on dh = 0,
/// dFinal = 1): db_t += Q_t dEnd, da_t += Q_t dEnd h_{t-1} (complex: the backward kernel's
/// products are of conj(a), and da takes conj(h_{t-1}), PyTorch's convention).
/// With `reverse` the state flows from the last rank to rank 0 (the forward's scan runs on the
/// reversed ranks, the backward's on the ranks in order): "first" and "last" swap.
/// With B = 0 or D = 0 the state is empty: every rank returns at once (any L, no kernel, no
/// message, `bytesSent` 0).
///
/// Every check happens before anything is posted; a failure after that aborts the group.
public struct ContextParallelRecurrence: Sendable, Hashable {
    /// Layout, real or complex, direction, path, chunk length and loads of the local passes.
    public var recurrence: LinearRecurrence
    /// `.lasp`, `.lasp2` or `.zeco(segments:)`: how the shards' state maps move.
    public var scheme: ContextParallelScheme

    /// - Parameters:
    ///   - recurrence: The local op (layout, complex, direction, algorithm, chunking).
    ///   - scheme: `.lasp`, `.lasp2` or `.zeco(segments:)`; a softmax scheme is refused by every call.
    public init(recurrence: LinearRecurrence = LinearRecurrence(layout: .bld), scheme: ContextParallelScheme = .lasp) {
        self.recurrence = recurrence
        self.scheme = scheme
    }

    /// The op name in errors.
    public static let opName = "contextParallel.recurrence"

    /// The scheme's all-scan. Only read after `check` has refused softmax schemes.
    var algorithm: AllScanAlgorithm { scheme.allScanAlgorithm ?? .chain(segments: 1) }

    /// Bytes one rank sends per call with `channels` = B * D rows of 8 bytes (complex: 16):
    /// the chain passes one prefix on (none from the rank the state reaches last: the last rank for a
    /// forward recurrence's forward pass or a reversed one's backward, else rank 0), the
    /// all-gather sends its map to every other rank.
    /// - Parameters:
    ///   - rank: The rank.
    ///   - ranks: The group's size.
    ///   - channels: B x D.
    ///   - backward: Whether the call is the backward pass.
    /// - Returns: The bytes the call sends from `rank` (what ``RecurrenceShardOutput/bytesSent``
    ///   measures).
    public func expectedBytesSent(rank: Int, ranks: Int, channels: Int, backward: Bool) -> Int {
        let value = channels * (recurrence.complex ? 16 : 8)
        let position = backward == recurrence.reverse ? rank : ranks - 1 - rank
        switch algorithm {
        case .chain: return position + 1 < ranks ? value : 0
        case .allGather: return (ranks - 1) * value
        }
    }

    /// The shard's dimensions, after the checks every rank makes before posting.
    struct Shard {
        let batch: Int, length: Int, channels: Int, complex: Bool
        var rows: Int { batch * channels }
        var elements: Int { batch * length * channels }
        var stateShape: [Int] { [batch, channels] + (complex ? [2] : []) }
        /// Floats of one scan value: a row [a, b] per channel.
        var valueFloats: Int { rows * (complex ? 4 : 2) }
    }

    /// Every check of one rank's forward that needs no other rank: before anything is posted.
    func checkForward(rank: Int, size: Int, device: Device, a: Tensor, b: Tensor, h0: Tensor?, h: Tensor, finalState: Tensor?,
                      incoming: Tensor?) throws -> Shard {
        let shard = try check(a: a, device)
        guard h0 == nil || rank == firstRank(size) else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "h0", reason: "only rank \(firstRank(size)) (the first steps) takes the initial state (rank \(rank) of \(size) was given one)")
        }
        for (operand, t) in [("finalState", finalState), ("incoming", incoming)] { try checkState(t, operand, shard, device) }
        _ = try RecurrencePlan(op: recurrence, device: device, a: a, inputs: [("b", b)], h0: h0, outputs: [("h", h)], state: nil, backward: nil)
        return shard
    }

    /// Every check of one rank's backward that needs no other rank.
    func checkBackward(rank: Int, size: Int, device: Device, a: Tensor, h: Tensor, incoming: Tensor?, dh: Tensor, dFinal: Tensor?,
                       da: Tensor, db: Tensor, dIncoming: Tensor?) throws -> Shard {
        let shard = try check(a: a, device)
        let lastRank = size - 1 - firstRank(size)
        guard dFinal == nil || rank == lastRank else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "dFinal", reason: "only rank \(lastRank) (the last steps) takes the final state's gradient (rank \(rank) of \(size) was given one)")
        }
        guard incoming != nil || rank == firstRank(size) else {
            throw VkAttnError.invalidValue(op: Self.opName, operand: "incoming", reason: "rank \(rank) needs the state entering its shard (the forward's incoming) for da at its first step")
        }
        try checkState(dIncoming, "dIncoming", shard, device)
        _ = try RecurrencePlan(op: recurrence, device: device, a: a, inputs: [("dh", dh), ("h", h)], h0: dFinal,
                               outputs: [("db", db), ("da", da)], state: nil, backward: .some(incoming))
        return shard
    }

    func check(a: Tensor, _ device: Device) throws -> Shard {
        let op = Self.opName
        guard a.device === device else { throw VkAttnError.deviceMismatch(op: op, operand: "a") }
        try scheme.expect(linear: true, op: op)
        let complex = recurrence.complex
        let dims = recurrence.layout == .bld ? "[B, L, D" : "[B, D, L"
        guard a.shape.count == (complex ? 4 : 3), !complex || a.shape[3] == 2 else {
            throw VkAttnError.shapeMismatch(op: op, operand: "a", expected: "\(dims)\(complex ? ", 2" : "")]", actual: "\(a.shape)")
        }
        let shard = recurrence.layout == .bld ? Shard(batch: a.shape[0], length: a.shape[1], channels: a.shape[2], complex: complex)
                                              : Shard(batch: a.shape[0], length: a.shape[2], channels: a.shape[1], complex: complex)
        // B = 0 or D = 0: an empty state, nothing flows between the ranks (any L). Otherwise each
        // rank's shard is one link of the state chain and needs a step.
        guard shard.rows == 0 || shard.length >= 1 else {
            throw VkAttnError.shapeMismatch(op: op, operand: "a", expected: "\(dims)\(complex ? ", 2" : "")], L >= 1 on every rank (with B, D > 0 each rank's shard is one link of the state chain)",
                                            actual: "\(a.shape)")
        }
        if shard.rows == 0 { return shard }
        if case let .chain(segments) = algorithm, segments < 1 || segments > shard.rows {
            throw VkAttnError.invalidValue(op: op, operand: "segments", reason: "\(segments) must be in 1...\(shard.rows) (B * D rows of the state)")
        }
        return shard
    }

    func checkState(_ t: Tensor?, _ operand: String, _ shard: Shard, _ device: Device) throws {
        try t?.expect(op: Self.opName, operand, shape: shard.stateShape, dtype: .f32, device: device)
        if let t { try t.expectBindable(op: Self.opName, operand) }
    }

    /// The communicator in the order the state flows: the ranks in order for a forward
    /// recurrence's forward pass and a reversed one's backward, else reversed. Every rank
    /// calls it (`subgroup` of the reversed members).
    func flow<C: Communicator>(_ comm: C, backward: Bool) throws -> C {
        backward == recurrence.reverse ? comm : try comm.subgroup(Array((0..<comm.size).reversed()))
    }

    /// The rank that holds the recurrence's first steps (h0 enters there).
    func firstRank(_ size: Int) -> Int { recurrence.reverse ? size - 1 : 0 }

    // MARK: Forward

    /// One rank's forward (SPMD: every rank of `comm` calls it with its shard). `h0`: the
    /// global initial state, on the first rank only (rank 0; reversed: the last rank; nil:
    /// zeros). Writes h (every state of the shard) and, when given, `finalState` (the state
    /// leaving the shard; the last shard's is the global final state) and `incoming` (the
    /// state entering the shard, which `backward` takes).
    /// - Parameters:
    ///   - a: This rank's decays, [B, L_r, D] or [B, D, L_r] (complex: plus [2]); fp32.
    ///   - b: This rank's inputs, a's shape.
    ///   - h0: The global initial state [B, D] (+ [2]), on the first rank only; nil means zeros.
    ///   - h: Receives every state of the shard, a's shape.
    ///   - finalState: Receives the state leaving the shard, [B, D] (+ [2]); nil skips it.
    ///   - incoming: Receives the state entering the shard (for the backward); nil skips it.
    ///   - comm: This rank's communicator.
    /// - Returns: The path, the local dispatch, the bytes and messages sent, whether the decay
    ///   pass ran.
    /// - Throws: `VkAttnError` for this rank's tensors before anything is posted; afterwards the
    ///   first failure, which aborts the group.
    public func forward<C: Communicator>(a: Tensor, b: Tensor, h0: Tensor? = nil, h: Tensor, finalState: Tensor? = nil,
                                         incoming: Tensor? = nil, communicator comm: C) async throws -> RecurrenceShardOutput {
        let device = comm.device
        let shard = try checkForward(rank: comm.rank, size: comm.size, device: device, a: a, b: b, h0: h0, h: h,
                                     finalState: finalState, incoming: incoming)
        if shard.rows == 0 {  // an empty state (B or D is 0): every rank returns here, no kernel, nothing posted
            let plan = try RecurrencePlan(op: recurrence, device: device, a: a, inputs: [("b", b)], h0: h0, outputs: [("h", h)], state: nil, backward: nil)
            return try emptyOutput("forward", plan, comm)
        }
        let stateShape = shard.stateShape, v = shard.valueFloats
        let t = try ScratchArena.allocate(device, [(a.shape, .f32), (a.shape, .f32), (stateShape, .f32),
                                                   (stateShape, .f32), ([v], .f32), ([v], .f32), ([v * (comm.size + 1)], .f32), ([4], .f32)])
        let (zeros, decay, endA, endB, value, prefix, scratch, dummy) = (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7])
        let ones = try unit(shard, device)
        // Both local passes are validated (plans built) before anything is recorded or posted.
        let local = recurrence
        let plans = try [
            RecurrencePlan(op: local, device: device, a: a, inputs: [("b", b)], h0: h0, outputs: [("h", h)],
                           state: ("finalState", endB), backward: nil),
            RecurrencePlan(op: local, device: device, a: a, inputs: [("b", zeros)], h0: ones, outputs: [("h", decay)],
                           state: ("finalState", endA), backward: nil),
        ]
        let flow = try flow(comm, backward: false)
        // Nothing precedes the first shard of the flow: its map is the constant B (A = 0), its
        // incoming state the identity's zero, so it skips the decay pass and the carry.
        let isFirst = flow.rank == 0
        let stream = try device.makeStream()
        let before = comm.traffic
        var tracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)
        var requests: [C.Request] = []
        let dispatch: RecurrenceDispatch
        do {
            let shardPass = try encodeShard("recurrence shard + decay", plans, isFirst: isFirst, zeros: zeros, endA: endA, end: endB,
                                            value: value, into: prefix, scratch: scratch, dummy: dummy, shard, flow: flow, tag: 1000,
                                            on: stream, &tracer)
            (dispatch, requests) = shardPass
            try tracer.begin("recurrence carry", on: stream)
            if !isFirst {
                try RecurrenceCarry.encode(.forward, count: shard.elements, length: shard.length, channels: shard.channels,
                                           bdl: recurrence.layout == .bdl, .init(m: decay.slice, scan: prefix.slice, y: h.slice),
                                           dummy: dummy.slice, complex: shard.complex, on: stream)
            }
            if let finalState {
                try RecurrenceCarry.encode(.state, count: shard.rows, length: 1, channels: shard.channels, bdl: false, affine: true,
                                           .init(m: isFirst ? zeros.slice : endA.slice, x: endB.slice, scan: prefix.slice, y: finalState.slice), dummy: dummy.slice, complex: shard.complex, on: stream)
            }
            if let incoming {
                if let h0 {
                    try stream.copy(from: h0.slice, to: incoming.slice)
                } else {
                    try RecurrenceCarry.encode(.state, count: shard.rows, length: 1, channels: shard.channels, bdl: false,
                                               .init(scan: prefix.slice, y: incoming.slice), dummy: dummy.slice, complex: shard.complex, on: stream)
                }
            }
            try tracer.end(on: stream)
            try await finish(stream, &tracer, requests, flow)
        } catch {
            comm.abort(error)
            throw error
        }
        return output("forward", dispatch, before, comm, decayPass: !isFirst)
    }

    // MARK: Backward

    /// One rank's backward of `forward` with the same a and h: from dh (of every state of the
    /// shard) and, on the rank of the last steps only (the last rank; reversed: rank 0),
    /// dFinal (of the global final state; nil: zeros), writes da, db and, when given,
    /// dIncoming (the gradient of the state entering the shard; on the first rank: dh0).
    /// `incoming` is the forward's `incoming` (the state entering the shard), required on
    /// every rank but the first, where it is the global h0 (nil: zeros).
    /// - Parameters:
    ///   - a: This rank's decays.
    ///   - h: This rank's states from the forward.
    ///   - incoming: The forward's `incoming` (every rank but the first).
    ///   - dh: The gradient of every state of the shard, a's shape.
    ///   - dFinal: The global final state's gradient, on the rank of the last steps only; nil
    ///     means zeros.
    ///   - da: Receives the decays' gradient.
    ///   - db: Receives the inputs' gradient.
    ///   - dIncoming: Receives the gradient of the state entering the shard; nil skips it.
    ///   - comm: This rank's communicator.
    /// - Returns: What the call did.
    /// - Throws: As ``forward(a:b:h0:h:finalState:incoming:communicator:)``.
    public func backward<C: Communicator>(a: Tensor, h: Tensor, incoming: Tensor? = nil, dh: Tensor, dFinal: Tensor? = nil,
                                          da: Tensor, db: Tensor, dIncoming: Tensor? = nil,
                                          communicator comm: C) async throws -> RecurrenceShardOutput {
        let device = comm.device
        let shard = try checkBackward(rank: comm.rank, size: comm.size, device: device, a: a, h: h, incoming: incoming, dh: dh,
                                      dFinal: dFinal, da: da, db: db, dIncoming: dIncoming)
        if shard.rows == 0 {  // an empty state: every rank returns here, no kernel, nothing posted
            let plan = try RecurrencePlan(op: recurrence, device: device, a: a, inputs: [("dh", dh), ("h", h)], h0: dFinal,
                                          outputs: [("db", db), ("da", da)], state: nil, backward: .some(incoming))
            return try emptyOutput("backward", plan, comm)
        }
        let stateShape = shard.stateShape, v = shard.valueFloats
        let t = try ScratchArena.allocate(device, [(a.shape, .f32), (a.shape, .f32), (a.shape, .f32), (stateShape, .f32),
                                                   (stateShape, .f32), ([v], .f32), ([v], .f32), ([v * (comm.size + 1)], .f32), ([4], .f32)])
        let (zeros, decay, unused, endA, endG, value, suffix, scratch, dummy) = (t[0], t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8])
        let ones = try unit(shard, device)
        let local = recurrence
        let plans = try [
            RecurrencePlan(op: local, device: device, a: a, inputs: [("dh", dh), ("h", h)], h0: dFinal, outputs: [("db", db), ("da", da)],
                           state: ("dh0", endG), backward: .some(incoming)),
            // Q_t = prod of a after t (db of dh = 0, dFinal = 1) and A (its dh0).
            RecurrencePlan(op: local, device: device, a: a, inputs: [("dh", zeros), ("h", h)], h0: ones,
                           outputs: [("db", decay), ("da", unused)], state: ("dh0", endA), backward: .some(nil)),
        ]
        // Gradients flow against the state: the suffix order.
        let flow = try flow(comm, backward: true)
        let isFirst = flow.rank == 0  // the shard of the last steps: a constant map, no decay pass
        let stream = try device.makeStream()
        let before = comm.traffic
        var tracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)
        var requests: [C.Request] = []
        let dispatch: RecurrenceDispatch
        do {
            let shardPass = try encodeShard("recurrence backward shard + decay", plans, isFirst: isFirst, zeros: zeros, endA: endA,
                                            end: endG, value: value, into: suffix, scratch: scratch, dummy: dummy, shard, flow: flow,
                                            tag: 1100, on: stream, &tracer)
            (dispatch, requests) = shardPass
            try tracer.begin("recurrence backward carry", on: stream)
            if !isFirst {
                try RecurrenceCarry.encode(.backward, count: shard.elements, length: shard.length, channels: shard.channels,
                                           bdl: recurrence.layout == .bdl, reversed: recurrence.reverse,
                                           .init(m: decay.slice, scan: suffix.slice, y: db.slice, z: da.slice, h: h.slice,
                                                 incoming: incoming?.slice), dummy: dummy.slice, complex: shard.complex, on: stream)
            }
            if let dIncoming {
                try RecurrenceCarry.encode(.state, count: shard.rows, length: 1, channels: shard.channels, bdl: false, affine: true,
                                           .init(m: isFirst ? zeros.slice : endA.slice, x: endG.slice, scan: suffix.slice, y: dIncoming.slice), dummy: dummy.slice, complex: shard.complex, on: stream)
            }
            try tracer.end(on: stream)
            try await finish(stream, &tracer, requests, flow)
        } catch {
            comm.abort(error)
            throw error
        }
        return output("backward", dispatch, before, comm, decayPass: !isFirst)
    }

    // MARK: Helpers

    /// Records the shard's local pass (`plans[0]`) and, past the first shard of the flow, its
    /// cumulative-decay pass (`plans[1]`, ending in `endA`); packs the rows [A, B] (A = 0 on the
    /// first shard; B = `end`, the local pass's end state) into `value` and posts their exclusive
    /// scan along `flow` into `result`. Returns the local pass's dispatch and the scan's requests.
    func encodeShard<C: Communicator>(_ label: String, _ plans: [RecurrencePlan], isFirst: Bool, zeros: Tensor, endA: Tensor,
                                      end: Tensor, value: Tensor, into result: Tensor, scratch: Tensor, dummy: Tensor,
                                      _ shard: Shard, flow: C, tag: Int, on stream: Stream,
                                      _ tracer: inout RankTracer) throws -> (RecurrenceDispatch, [C.Request]) {
        try tracer.begin(label, on: stream)
        try stream.fill(zeros.slice, word: 0)
        try stream.barrier()
        let dispatch = try plans[0].encode(on: stream)
        if !isFirst { _ = try plans[1].encode(on: stream) }
        try stream.barrier()
        try RecurrenceCarry.encode(.pack, count: shard.rows, length: 1, channels: shard.channels, bdl: false,
                                   .init(m: isFirst ? zeros.slice : endA.slice, x: end.slice, y: value.slice), dummy: dummy.slice,
                                   complex: shard.complex, on: stream)
        try tracer.end(on: stream)
        return (dispatch, try scan(flow, value, into: result, shard, scratch: scratch, tag: tag, on: stream))
    }

    /// The state 1 (complex: (1, 0) per channel): h0 of the cumulative-decay pass.
    func unit(_ shard: Shard, _ device: Device) throws -> Tensor {
        let one: [Float] = shard.complex ? [1, 0] : [1]
        return try device.makeTensor([[Float]](repeating: one, count: shard.rows).flatMap { $0 }, shape: shard.stateShape)
    }

    /// The exclusive scan of the rows [A, B] along `flow`.
    func scan<C: Communicator>(_ flow: C, _ value: Tensor, into result: Tensor, _ shard: Shard, scratch: Tensor, tag: Int,
                               on stream: Stream) throws -> [C.Request] {
        if shard.complex {
            return try flow.allScan(value.slice, into: result.slice, combine: ComplexAffineScan(rows: shard.rows, width: 1),
                                    algorithm: algorithm, scratch: scratch.slice, tag: tag, on: stream)
        }
        return try flow.allScan(value.slice, into: result.slice, combine: AffineScan(rows: shard.rows, width: 1),
                                algorithm: algorithm, scratch: scratch.slice, tag: tag, on: stream)
    }

    /// Submits, waits without blocking a pool thread, records the timeline, surfaces transfer errors.
    func finish<C: Communicator>(_ stream: Stream, _ tracer: inout RankTracer, _ requests: [C.Request], _ comm: C) async throws {
        let submission = try stream.submit()
        try await submission.completion()
        try stream.synchronize()
        try tracer.collect(stream)
        try comm.collectTimestamps(of: stream)
        for r in requests { try await r.wait() }
    }

    /// The result of a rank whose state is empty: the local plan records nothing (its outputs
    /// and states are empty), nothing is sent.
    func emptyOutput<C: Communicator>(_ direction: String, _ plan: RecurrencePlan, _ comm: C) throws -> RecurrenceShardOutput {
        let stream = try comm.device.makeStream()
        let dispatch = try plan.encode(on: stream)
        try stream.synchronize()
        return RecurrenceShardOutput(path: "\(scheme) x\(comm.size) \(direction): \(dispatch.path), nothing sent", local: dispatch,
                                     bytesSent: 0, messagesSent: 0, decayPass: false)
    }

    func output<C: Communicator>(_ direction: String, _ dispatch: RecurrenceDispatch, _ before: RankTraffic, _ comm: C,
                                 decayPass: Bool) -> RecurrenceShardOutput {
        let after = comm.traffic
        let carry = decayPass ? " + cumulative decay (the same kernel on b = 0, h0 = 1) + carry added in place"
                              : " (first of the flow: constant map, no decay pass, no carry)"
        let path = "\(scheme) x\(comm.size) \(direction): \(dispatch.path)\(carry), \(comm.route.rawValue)"
        return RecurrenceShardOutput(path: path, local: dispatch, bytesSent: after.bytesSent - before.bytesSent,
                                     messagesSent: after.messagesSent - before.messagesSent, decayPass: decayPass)
    }
}
