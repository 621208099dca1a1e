import VkAttn
import VulkanCompute

/// One rank's call of `ContextParallelLinearAttention`, recorded on two streams of the
/// device's queue so that the scan's transfers run while the rank computes: `stream` records
/// what the scan needs (the local states and the scan value) and is submitted; the scan is
/// posted; then `compute`, holding the work that does not need the scan (the forward's output
/// from the local states; the backward's recomputed states and dO contributions), is
/// submitted ahead of the waits the scan recorded on `stream`; what needs the scan's result
/// (the correction, the backward's gradients) follows the scan on `stream`. Compute intervals go to the group's timeline.
/// Lives in the rank's task (Stream is not Sendable).
final class LinearRankRun<C: Communicator> {
    let comm: C
    /// The all-scan of the scheme (LASP: a chain, LASP-2: an all-gather, ZeCO: a segmented chain).
    let algorithm: AllScanAlgorithm
    let op: ContextParallelLinearAttention
    let shape: ContextParallelLinearAttention.Shape
    let stream: Stream
    let compute: Stream
    let carry: LinearCarry
    var tracer: RankTracer
    var computeTracer: RankTracer
    var submissions: [Submission] = []

    /// Tags of the forward and the backward scans (the chain uses tag + segment).
    static var forwardTag: Int { 1 << 20 }
    static var backwardTag: Int { 1 << 21 }

    init(comm: C, op: ContextParallelLinearAttention, shape: ContextParallelLinearAttention.Shape) throws {
        guard let algorithm = op.scheme.allScanAlgorithm else {
            throw VkAttnError.unsupported(op: ContextParallelLinearAttention.opName, reason: "\(op.scheme) is not a linear-attention scheme")
        }
        self.algorithm = algorithm
        self.comm = comm
        self.op = op
        self.shape = shape
        stream = try comm.device.makeStream()
        compute = try comm.device.makeStream()
        carry = try LinearCarry(device: comm.device, gating: op.attention.gating, batch: shape.batch, length: op.lengths[comm.rank],
                                heads: shape.heads, dk: shape.dk, dv: shape.dv)
        tracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)
        computeTracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)
    }

    var device: Device { comm.device }
    var rank: Int { comm.rank }
    var isLast: Bool { comm.rank == comm.size - 1 }
    var stateShape: [Int] { [shape.batch, shape.heads, shape.dk, shape.dv] }
    var combine: AffineScan { AffineScan(rows: carry.rows, width: shape.dv) }

    /// A scan value, its result and the scratch every algorithm fits in.
    func scanBuffers() throws -> (value: Buffer, result: Buffer, scratch: Buffer) {
        let bytes = combine.byteCount
        return (try device.makeBuffer(byteCount: bytes), try device.makeBuffer(byteCount: bytes),
                try device.makeBuffer(byteCount: (comm.size + 1) * bytes))
    }

    func path(_ plan: GLAPlan, backward: Bool) -> String {
        "\(op.scheme)\(backward ? " backward" : "") x\(comm.size): local \(plan.label) + \(backward ? "state-gradient" : "correction") kernel, "
            + "all-scan \(algorithm)\(backward ? " over the reversed ranks" : ""), \(comm.route.rawValue)"
    }

    /// Submits what the scan needs: a send's bytes are ready once the submission that posted
    /// it is done, so nothing queued after it may delay the send.
    func releaseScanInputs() throws {
        submissions.append(try stream.submit())
    }

    /// Submits `compute` after the scan's posts: the queue runs it before the waits the scan
    /// recorded on `stream` (submitted later), so the transfers overlap it. (A chain's middle
    /// rank submits its wait with the send that forwards the prefix; its compute follows.)
    func releaseCompute() throws {
        submissions.append(try compute.submit())
    }

    /// Submits, waits without blocking a pool thread, records the timeline, surfaces transfer errors.
    func finish(_ requests: [C.Request]) async throws {
        submissions.append(try stream.submit())
        for s in submissions { try await s.completion() }
        try compute.synchronize()
        try stream.synchronize()
        try tracer.collect(stream)
        try computeTracer.collect(compute)
        try comm.collectTimestamps(of: stream)
        for r in requests { try await r.wait() }
    }

    /// `into`'s tensors were checked by the caller; nil ones are allocated here.
    func forward(q: Tensor, k: Tensor, v: Tensor, logGates: Tensor?, initialState: Tensor?, returnFinalState: Bool,
                 into storage: LinearParallelOutputStorage) async throws -> ContextParallelOutput {
        let o = try storage.output ?? device.makeTensor(shape: [shape.batch, op.lengths[rank], shape.heads, shape.dv], dtype: .f32)
        let localFinal = try device.makeTensor(shape: stateShape, dtype: .f32)
        let incoming = try storage.incomingState ?? device.makeTensor(shape: stateShape, dtype: .f32)
        let (value, result, scratch) = try scanBuffers()
        // Local chunks from zero (rank 0: from the global initial state, which then is part
        // of its B and reaches every later rank through the scan).
        let plan = try GLAPlan(op: op.attention, device: device, q: q, k: k, v: v, logGates: logGates, initialState: initialState)
        try plan.checkForward(output: o, finalState: localFinal, chunkStates: nil)

        try tracer.begin("local states", on: stream)
        let (states, gcum) = try plan.encodeForwardStates(stream, chunkStates: nil)
        try plan.encodeFinalState(stream, states: states, into: localFinal)
        try stream.barrier()
        try carry.encodeDecay(stream, logGates: logGates, value: value.whole)
        try carry.pack(stream, state: localFinal.slice, into: value.whole)
        try tracer.end(on: stream)

        try compute.barrier()  // after the states, submitted earlier on the same queue
        try computeTracer.begin("local output", on: compute)
        try plan.encodeForwardOutput(compute, states: states, gcum: gcum, output: o)
        try computeTracer.end(on: compute)
        try releaseScanInputs()
        let requests = try comm.allScan(value.whole, into: result.whole, combine: combine, algorithm: algorithm,
                                        scratch: scratch.whole, tag: Self.forwardTag, on: stream)
        try releaseCompute()

        try tracer.begin("state correction", on: stream)
        if rank > 0 {
            try carry.encodeCorrection(stream, q: q, incoming: result.whole, output: o)
        }
        if let initialState {
            try stream.copy(from: initialState.slice, to: incoming.slice)
            try stream.barrier()
        } else {
            try carry.unpack(stream, value: result.whole, into: incoming.slice)  // rank 0: the identity's zeros
        }
        var final: Tensor?
        if returnFinalState && isLast {
            // The inclusive prefix: this rank's map after the incoming one.
            let inclusive = try device.makeBuffer(byteCount: combine.byteCount)
            try combine.encode(earlier: result.whole, later: value.whole, into: inclusive.whole, rows: 0..<combine.rows, on: stream)
            try stream.barrier()
            let f = try storage.finalState ?? device.makeTensor(shape: stateShape, dtype: .f32)
            try carry.unpack(stream, value: inclusive.whole, into: f.slice)
            final = f
        }
        try tracer.end(on: stream)
        try await finish(requests)
        return ContextParallelOutput(output: o, incomingState: incoming, finalState: final, path: path(plan, backward: false))
    }

    func backward(q: Tensor, k: Tensor, v: Tensor, logGates: Tensor?, incomingState: Tensor, dOutput: Tensor,
                  dFinalState: Tensor?, into storage: LinearParallelGradientStorage) async throws -> ContextParallelGradients {
        let l = op.lengths[rank]
        let dq = try storage.dq ?? device.makeTensor(shape: q.shape, dtype: .f32)
        let dk = try storage.dk ?? device.makeTensor(shape: k.shape, dtype: .f32)
        let dv = try storage.dv ?? device.makeTensor(shape: v.shape, dtype: .f32)
        let gateShape = op.attention.gating == .perKey ? [shape.batch, l, shape.heads, shape.dk] : [shape.batch, l, shape.heads]
        let dg = try logGates.map { _ in try storage.dLogGates ?? device.makeTensor(shape: gateShape, dtype: .f32) }
        let dInitial = rank == 0 ? try storage.dInitialState ?? device.makeTensor(shape: stateShape, dtype: .f32) : nil
        // The gradient of this shard's final state: from the scan, or the global one on the last rank.
        let dOut = isLast ? dFinalState : try device.makeTensor(shape: stateShape, dtype: .f32)
        var (value, result, scratch) = try scanBuffers()
        let plan = try GLAPlan(op: op.attention, device: device, q: q, k: k, v: v, logGates: logGates, initialState: incomingState)
        try plan.checkBackward(dOutput: dOutput, dFinalState: dOut, dq: dq, dk: dk, dv: dv, dLogGates: dg, dInitialState: dInitial)

        // This rank's map of the state gradient: dS_in = a * dS_out + E (the last rank folds
        // in the global final-state gradient, since nothing comes after it).
        try tracer.begin("state gradient", on: stream)
        try carry.encodeDecay(stream, logGates: logGates, value: value.whole)
        try carry.encodeStateGradient(stream, q: q, dOutput: dOutput, value: value.whole)
        if isLast, let dFinalState {
            let outer = try device.makeBuffer(byteCount: combine.byteCount)
            try combine.encodeIdentity(into: outer.whole, rows: 0..<combine.rows, on: stream)
            try stream.barrier()
            try carry.pack(stream, state: dFinalState.slice, into: outer.whole)
            let folded = try device.makeBuffer(byteCount: combine.byteCount)
            try combine.encode(earlier: outer.whole, later: value.whole, into: folded.whole, rows: 0..<combine.rows, on: stream)
            try stream.barrier()
            value = folded
        }
        try tracer.end(on: stream)

        // What needs no state gradient computes while the scan's transfers run.
        try computeTracer.begin("local states", on: compute)
        let work = try plan.encodeBackwardStates(compute, dOutput: dOutput)
        try computeTracer.end(on: compute)

        // Suffix scan: the same combine over the ranks in reverse order.
        try releaseScanInputs()
        let reversed = try comm.subgroup(Array((0..<comm.size).reversed()))
        let requests = try reversed.allScan(value.whole, into: result.whole, combine: combine, algorithm: algorithm,
                                            scratch: scratch.whole, tag: Self.backwardTag, on: stream)
        try releaseCompute()
        if !isLast, let dOut {
            try carry.unpack(stream, value: result.whole, into: dOut.slice)
        }

        try tracer.begin("local gradients", on: stream)
        try plan.encodeBackwardGradients(stream, work, dOutput: dOutput, dFinalState: dOut, dq: dq, dk: dk, dv: dv, dLogGates: dg,
                                         dInitialState: dInitial)
        try tracer.end(on: stream)
        try await finish(requests)
        return ContextParallelGradients(dq: dq, dk: dk, dv: dv, dLogGates: dg, dInitialState: dInitial, path: path(plan, backward: true))
    }
}
