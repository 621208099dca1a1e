import VkAttn
import VulkanCompute

/// One rank's call of `ContextParallelDeltaRule` on one stream: what the all-scan needs (the
/// chunks' maps chained into the rank's pair) is recorded and submitted first, so the sends
/// leave as soon as it is done; the scan is posted; what needs its result (the chain from the
/// incoming state, the outputs or gradients) follows. Lives in the rank's task (Stream is not
/// Sendable).
final class DeltaRankRun<C: Communicator> {
    let comm: C
    let op: ContextParallelDeltaRule
    let plan: DeltaRulePlan
    let algorithm: AllScanAlgorithm
    let stream: Stream
    var tracer: RankTracer
    var submissions: [Submission] = []

    static var forwardTag: Int { 3 << 20 }
    static var backwardTag: Int { 3 << 21 }

    init(comm: C, op: ContextParallelDeltaRule, plan: DeltaRulePlan) throws {
        guard let algorithm = op.scheme.allScanAlgorithm else {
            throw VkAttnError.unsupported(op: ContextParallelDeltaRule.opName, reason: "\(op.scheme) is not a linear scheme")
        }
        self.comm = comm
        self.op = op
        self.plan = plan
        self.algorithm = algorithm
        stream = try comm.device.makeStream()
        tracer = RankTracer(rank: comm.globalRank, clock: comm.clock, timeline: comm.timeline)
    }

    var device: Device { comm.device }
    var isLast: Bool { comm.rank == comm.size - 1 }
    var combine: MatrixAffineScan { MatrixAffineScan(rows: plan.N * plan.H, dk: plan.Dk, dv: plan.Dv) }

    func path(backward: Bool) -> String {
        "\(op.scheme)\(backward ? " backward" : "") x\(comm.size): local \(plan.label) + (P, F) pairs, "
            + "all-scan \(algorithm)\(backward ? " over the reversed ranks" : ""), \(comm.route.rawValue)"
    }

    /// A scan value, its result and the scratch every algorithm fits in.
    func scanBuffers() throws -> (value: Buffer, result: Buffer, scratch: Buffer) {
        let bytes = combine.byteCount
        return (try device.makeBuffer(byteCount: bytes), try device.makeBuffer(byteCount: bytes),
                try device.makeBuffer(byteCount: (comm.size + 1) * bytes))
    }

    /// Copies the state part B of every [M | B] block of `value` into `state` ([N, H, Dk, Dv]).
    func extractState(_ value: Buffer, into state: Tensor) throws {
        let (dk, dv) = (plan.Dk, plan.Dv)
        let regions = (0..<(plan.N * plan.H * dk)).map { row -> (source: Int, destination: Int, bytes: Int) in
            ((row * (dk + dv) + dk) * 4, state.slice.offset + row * dv * 4, dv * 4)
        }
        try stream.copy(from: value, to: state.buffer, regions: regions)
    }

    /// Submits, waits without blocking a pool thread, records the timeline, surfaces transfer errors.
    func finish(_ requests: [C.Request]) async throws {
        submissions.append(try stream.submit())
        for s in submissions { try await s.completion() }
        try stream.synchronize()
        try tracer.collect(stream)
        try comm.collectTimestamps(of: stream)
        for r in requests { try await r.wait() }
    }

    func forward(returnFinalState: Bool) async throws -> ContextParallelOutput {
        let o = try device.makeTensor(shape: [plan.B, plan.L, plan.H, plan.Dv], dtype: .f32)
        let stateShape = [plan.N, plan.H, plan.Dk, plan.Dv]
        let incoming = try device.makeTensor(shape: stateShape, dtype: .f32)
        try plan.checkForward(output: o, finalState: nil)
        let (value, result, scratch) = try scanBuffers()

        try tracer.begin("local maps", on: stream)
        let work = try plan.encodeMaps(stream)
        // (P_r, F_r): rank 0's F from the global initial state, the others' from zero.
        try plan.encodeCarry(stream, work, reverse: false, start: plan.initial?.slice, states: nil, pairs: value.whole)
        try stream.barrier()
        try tracer.end(on: stream)
        submissions.append(try stream.submit())
        let requests = try comm.allScan(value.whole, into: result.whole, combine: combine, algorithm: algorithm,
                                        scratch: scratch.whole, tag: Self.forwardTag, on: stream)

        try tracer.begin("chain and output", on: stream)
        if let initial = plan.initial {
            try stream.copy(from: initial.slice, to: incoming.slice)
        } else {
            try extractState(result, into: incoming)  // rank 0 without an initial state: the identity's zeros
        }
        try stream.barrier()
        let states = try plan.makeStates()
        try plan.encodeCarry(stream, work, reverse: false, start: incoming.slice, states: states.whole)
        try stream.barrier()
        try plan.encodeOutput(stream, work, states: states.whole, output: o)
        var final: Tensor?
        if returnFinalState && isLast {
            let f = try device.makeTensor(shape: stateShape, dtype: .f32)
            try plan.encodeSlots(stream, from: states, first: false, into: f)
            final = f
        }
        try tracer.end(on: stream)
        try await finish(requests)
        return ContextParallelOutput(output: o, incomingState: incoming, finalState: final, path: path(backward: false))
    }

    func backward(dOutput: Tensor, dFinalState: Tensor?, into grads: ContextParallelDeltaGradients) async throws -> ContextParallelDeltaGradients {
        let stateShape = [plan.N, plan.H, plan.Dk, plan.Dv]
        let (value, result, scratch) = try scanBuffers()

        // This rank's map of the state gradient, dS_in = P^T dS_out + E (the last rank's from
        // the global dFinal), chained through the transposed chunk maps.
        try tracer.begin("local state gradient", on: stream)
        let work = try plan.encodeMaps(stream)
        let states = try plan.makeStates()
        try plan.encodeCarry(stream, work, reverse: false, start: plan.initial?.slice, states: states.whole)
        try stream.barrier()
        let back = try plan.encodeStateGradientBias(stream, work, states: states.whole, dOutput: dOutput)
        try stream.barrier()
        try plan.encodeCarry(stream, work, reverse: true, start: isLast ? dFinalState?.slice : nil, bias: back.g.whole, states: nil,
                             pairs: value.whole)
        try stream.barrier()
        try tracer.end(on: stream)
        submissions.append(try stream.submit())
        let reversed = try comm.subgroup(Array((0..<comm.size).reversed()))
        let requests = try reversed.allScan(value.whole, into: result.whole, combine: combine, algorithm: algorithm,
                                            scratch: scratch.whole, tag: Self.backwardTag, on: stream)

        try tracer.begin("local gradients", on: stream)
        let dOut: Tensor?
        if isLast {
            dOut = dFinalState
        } else {
            let d = try device.makeTensor(shape: stateShape, dtype: .f32)
            try extractState(result, into: d)
            try stream.barrier()
            dOut = d
        }
        let dstates = try plan.makeStates()
        try plan.encodeCarry(stream, work, reverse: true, start: dOut?.slice, bias: back.g.whole, states: dstates.whole)
        try stream.barrier()
        try plan.encodeGradients(stream, work, back, states: states.whole, dstates: dstates.whole, dOutput: dOutput,
                                 dq: grads.dq, dk: grads.dk, dv: grads.dv, dBeta: grads.dBeta, dLogDecay: grads.dLogDecay)
        if let dInitial = grads.dInitialState {
            try plan.encodeSlots(stream, from: dstates, first: true, into: dInitial)
        }
        try tracer.end(on: stream)
        try await finish(requests)
        return grads.with(path: path(backward: true))
    }
}
