import ArgumentParser
import Foundation
import VkAttn
import VkAttnReference

struct Scan: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Prefix scan (sum or max; inclusive or exclusive; batched rows; segmented).",
        discussion: """
            GB/s counts the minimum bytes moved: every input element read once and every output \
            element written once (plus the head flags read once with --segment-length). \
            ratio_to_copy divides by vkCmdCopyBuffer's GB/s (read + write) for the same number \
            of bytes, measured in the same run. path: the cross-tile path, the load width, the tile.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var measure: MeasureOptions
    // Kept as text and parsed in `validate`, so that a bad value is a one-line error.
    @Option(name: .customLong("count"), help: "Elements per row (suffixes K, M, G: binary multiples).") var countText = "64M"

    var count: Int { parseBytes(countText) ?? 0 }
    @Option(help: "Rows scanned independently (input [batch, count]).") var batch = 1
    @Option(help: "Element type.") var dtype = ScanElementType.f32
    @Option(help: "Operator: add, or max (f32).") var op = ScanOperator.add
    @Flag(help: "Exclusive scan (default inclusive).") var exclusive = false
    @Option(help: "Head flags every this many elements (a segmented scan; default none).") var segmentLength: Int?
    @Option(help: "Cross-tile path: one forced, both in turn, or default (the device's choice).")
    var path = PathChoice<ScanAlgorithm>.deviceDefault
    @Option(help: "Tuning: invocations per workgroup (default: the device's).") var workgroupSize: Int?
    @Option(help: "Tuning: elements per invocation, 4...32 (default: the device's).") var items: Int?
    @Option(help: "Tuning: look-back polls before the fallback (default: the device's).") var polls: Int?
    @Option(help: "Tuning: tiles per workgroup (default: the device's).") var tilesPerGroup: Int?

    func validate() throws {
        guard op.dtypes.contains(dtype.dtype) else { throw OptionError("--op \(op.rawValue) does not take --dtype \(dtype.rawValue)") }
        guard batch >= 1 else { throw OptionError("--batch must be >= 1") }
        guard parseBytes(countText) != nil else { throw OptionError("--count: '\(countText)' is not a positive count like 4096, 64K, 64M") }
        try Limits.positive("--segment-length", segmentLength)
        if let segmentLength, segmentLength > count { throw OptionError("--segment-length must be at most --count (\(count)), got \(segmentLength)") }
        for (name, value) in [("--workgroup-size", workgroupSize), ("--items", items), ("--polls", polls), ("--tiles-per-group", tilesPerGroup)] {
            try Limits.positive(name, value)
        }
        // The scan walks arrays larger than one binding in chunks, but the input and output are
        // each one allocation.
        let bytes = try Limits.bytes("--count x --batch", [count, batch], element: 4)
        guard bytes <= 1 << 40 else { throw OptionError("--count x --batch: \(bytes) bytes is beyond any device") }
    }

    func run() throws {
        let context = try BenchContext(device)
        let bytes = count * batch * 4
        let limit = context.device.capabilities.maxMemoryAllocationBytes
        guard bytes <= limit else {
            throw OptionError("--count x --batch: \(bytes) bytes per array is more than \(context.deviceName) allocates at once (\(limit) bytes)")
        }
        let rows = try ScanBenchmark(count: count, batch: batch, dtype: dtype.dtype, op: op, exclusive: exclusive,
                                     segmentLength: segmentLength ?? 0, path: path, measure: measure,
                                     tuning: tuning(context.device)).run(context)
        try context.report(rows, json: measure.json)
    }

    func tuning(_ device: Device) -> PrefixScan.Tuning? {
        guard workgroupSize != nil || items != nil || polls != nil || tilesPerGroup != nil else { return nil }
        var t = PrefixScan.Tuning.preferred(for: device)
        if let workgroupSize { t.workgroupSize = workgroupSize }
        if let items { t.itemsPerInvocation = items }
        if let polls { t.lookbackPolls = polls }
        if let tilesPerGroup { t.tilesPerWorkgroup = tilesPerGroup }
        return t
    }
}

struct ScanBenchmark {
    var count: Int
    var batch: Int
    var dtype: DType
    var op: ScanOperator
    var exclusive: Bool
    var segmentLength: Int
    var path: PathChoice<ScanAlgorithm>
    var measure: MeasureOptions
    var tuning: PrefixScan.Tuning?

    func run(_ context: BenchContext) throws -> [ResultRow] {
        let device = context.device
        let total = count * batch
        var rng = SeededRandom.fresh()
        let shape = batch > 1 ? [batch, count] : [count]
        let floats = dtype == .f32 ? rng.floats(total, in: -1...1) : []
        let words = dtype == .f32 ? floats.map(\.bitPattern) : rng.words(total)
        let input = try Tensor(try device.makeBuffer(words), shape: shape, dtype: dtype)
        let output = try device.makeTensor(shape: shape, dtype: dtype)
        let flagValues: [UInt32]? = segmentLength > 0 ? (0..<total).map { $0 % segmentLength == 0 ? 1 : 0 } : nil
        let flags = try flagValues.map { try Tensor(try device.makeBuffer($0), shape: [total], dtype: .u32) }
        let segments: ScanSegments = flags.map { .headFlags($0) } ?? .none
        let bytes = total * 4 * (flags == nil ? 2 : 3)
        let copyGBps = try CopyReference.gbps(context, bytes: bytes / 2, warmup: measure.warmup, iterations: measure.iterations)

        let paths = path.paths
        var results: [ResultRow] = []
        for forced in paths {
            let scan = PrefixScan(op: op, exclusive: exclusive, algorithm: forced, tuning: tuning)
            let stream = try device.makeStream()
            try ShaderFill.encode(output.slice, value: Float.nan, on: stream)
            try stream.synchronize()
            let timing = try Timing.measure(device, warmup: measure.warmup, iterations: measure.iterations) { stream in
                try scan.encode(input: input, output: output, segments: segments, on: stream)
            }
            // One more run to report how often the single pass fell back (stderr: not a result).
            let once = try scan.encode(input: input, output: output, segments: segments, on: stream)
            try stream.synchronize()
            if once.algorithm == .singlePass {
                FileHandle.standardError.write(Data("scan: \(try once.fallbacks()) fallbacks over \(once.tiles) tiles in one run\n".utf8))
            }
            let check = measure.check ? try verify(output: output, floats: floats, words: words, flags: flagValues)
                                      : (CheckResult.skipped, nil)
            let gbps = Double(bytes) / (timing.medianMs * 1e6)
            var config: [String: ConfigValue] = ["count": .int(count), "batch": .int(batch), "dtype": .string(dtype.rawValue),
                                                 "op": .string(op.rawValue), "exclusive": .bool(exclusive)]
            if segmentLength > 0 { config["segment_length"] = .int(segmentLength) }
            results.append(ResultRow(op: "scan", device: context.deviceName, config: config, path: scan.path(on: device),
                                     timing: timing, gbps: gbps, ratioToCopy: gbps / copyGBps,
                                     check: check.0, maxRelError: check.1))
        }
        return results
    }

    /// Integers exactly; f32 against the fp64 reference, error relative to the running sum of
    /// |x| (the scale of any fp32 summation's rounding), failing above 1e-5 of that scale
    /// plus the look-back chain's depth (tiles before the element) times 2^-24.
    func verify(output: Tensor, floats: [Float], words: [UInt32], flags: [UInt32]?) throws -> (CheckResult, Double?) {
        let heads = flags.map { $0.map { $0 != 0 } }
        let rowLength = batch > 1 ? count : nil
        let got = try output.buffer.read(UInt32.self, count: output.elementCount, at: output.slice.offset)
        switch dtype {
        case .u32:
            let ref = ScanReference.scan(words, exclusive: exclusive, rowLength: rowLength, flags: heads)
            let ok = got == ref
            if let bad = got.indices.first(where: { got[$0] != ref[$0] }) {
                FileHandle.standardError.write(Data("scan: first mismatch at \(bad): \(got[bad]) != \(ref[bad]) (diff \(got[bad] &- ref[bad]))\n".utf8))
            }
            return (ok ? .pass : .fail, ok ? 0 : 1)
        case .i32:
            let ref = ScanReference.scan(words.map { Int32(bitPattern: $0) }, exclusive: exclusive, rowLength: rowLength, flags: heads)
            let ok = got.map { Int32(bitPattern: $0) } == ref
            return (ok ? .pass : .fail, ok ? 0 : 1)
        default:
            let ref = ScanReference.scan(floats, op: op, exclusive: exclusive, rowLength: rowLength, flags: heads)
            if op == .max {
                let ok = zip(got, ref).allSatisfy { Double(Float(bitPattern: $0)) == $1 }
                return (ok ? .pass : .fail, ok ? 0 : 1)
            }
            var scale = ScanReference.absoluteScale(floats, rowLength: rowLength, flags: heads)
            if exclusive {
                let h = ScanReference.heads(count: scale.count, rowLength: rowLength, flags: heads)
                scale = scale.indices.map { i in h[i] ? 0 : (i == 0 ? 0 : scale[i - 1]) }
            }
            let tile = 4096.0
            var worst = 0.0
            var ok = true
            for i in got.indices {
                let err = abs(Double(Float(bitPattern: got[i])) - ref[i])
                let rel = err / max(scale[i], 1e-30)
                worst = max(worst, rel)
                let depthBound = (1e-5 + Double(i) / tile * 0x1p-24) * scale[i]
                if !(err <= depthBound + 1e-30) { ok = false }
            }
            return (ok ? .pass : .fail, worst)
        }
    }
}
