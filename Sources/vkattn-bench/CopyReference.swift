import VkAttn

/// The copy bandwidth of this device in this run, measured with vkCmdCopyBuffer: what the
/// `ratio_to_copy` of every memory-bound op divides by.
enum CopyReference {
    /// GB/s (bytes read + bytes written) of copying `bytes` (at least 4 MiB is measured so
    /// that tiny problems do not understate the device).
    static func gbps(_ context: BenchContext, bytes: Int, warmup: Int, iterations: Int) throws -> Double {
        let size = max(bytes, 4 << 20) / 4 * 4
        let device = context.device
        let source = try device.makeBuffer(byteCount: size)
        let destination = try device.makeBuffer(byteCount: size)
        let stream = try device.makeStream()
        try ShaderFill.encode(source.whole, value: Float(1), on: stream)
        try stream.synchronize()
        let timing = try Timing.measure(device, warmup: warmup, iterations: iterations) { stream in
            try stream.copy(from: source.whole, to: destination.whole)
        }
        return 2 * Double(size) / (timing.medianMs * 1e6)
    }
}
