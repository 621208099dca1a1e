import CVulkan
#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The host clock every timeline is expressed in: CLOCK_MONOTONIC, nanoseconds.
public enum HostClock {
    /// - Returns: CLOCK_MONOTONIC now, in nanoseconds.
    public static func nanoseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }
}

/// Maps one device's GPU timestamp ticks to host `HostClock` nanoseconds, so that intervals
/// recorded on several devices (and by host threads) lie on one time axis.
///
/// Two ways, reported in `method`: VK_EXT_calibrated_timestamps where the device offers the
/// device and CLOCK_MONOTONIC domains (sampled together, error `maxDeviation`); otherwise a
/// bracket: a timestamp-only submission between two host clock reads, the tightest of several
/// tries (error half the bracket).
public struct GPUClock: Sendable, Hashable {
    /// How a clock was calibrated.
    public enum Method: String, Sendable, Hashable, Codable {
        /// VK_EXT_calibrated_timestamps: device and host clocks sampled together.
        case calibratedTimestamps = "calibrated-timestamps"
        /// A timestamp-only submission between two host clock reads.
        case submitBracket = "submit-bracket"
    }

    /// How this clock was calibrated.
    public let method: Method
    /// Bound on the mapping error, nanoseconds.
    public let uncertaintyNanoseconds: Double
    let baseTicks: UInt64
    let baseHost: UInt64
    let period: Double
    let mask: UInt64

    /// Host nanoseconds of a timestamp read with `Stream.ticks(of:)`.
    /// - Parameter ticks: Raw ticks of a timestamp of this device's queue.
    /// - Returns: The same instant in ``HostClock`` nanoseconds.
    public func hostNanoseconds(ticks: UInt64) -> Double {
        let delta = Int64(bitPattern: (ticks & mask) &- (baseTicks & mask))
        return Double(baseHost) + Double(delta) * period
    }

    /// Calibrates `device`'s timestamps of `queue` against the host clock.
    /// - Parameters:
    ///   - device: The device whose timestamps to map.
    ///   - queue: The queue whose timestamps will be read.
    /// - Returns: The mapping (calibrated timestamps where offered, else the tightest of five
    ///   submit brackets).
    /// - Throws: `VulkanError.unsupportedDevice` when the queue family has no timestamps; the
    ///   errors of the streams and calls used to sample.
    public static func calibrate(_ device: Device, queue: QueueKind = .compute) throws -> GPUClock {
        let family = device.queue(queue).family
        let bits = device.capabilities.queueFamilies[family].timestampValidBits
        guard bits > 0 else {
            throw VulkanError.unsupportedDevice(device: device.label, reason: "queue family \(family) has no timestamps")
        }
        let mask: UInt64 = bits >= 64 ? .max : (1 << UInt64(bits)) - 1
        let period = device.capabilities.timestampPeriodNanoseconds
        if let sample = try calibratedSample(device) {
            return GPUClock(method: .calibratedTimestamps, uncertaintyNanoseconds: sample.deviation,
                            baseTicks: sample.ticks, baseHost: sample.host, period: period, mask: mask)
        }
        let stream = try device.makeStream(queue: queue)
        var best: (ticks: UInt64, host: UInt64, width: UInt64)?
        for _ in 0..<5 {
            let stamp = try stream.timestamp()
            let before = HostClock.nanoseconds()
            let submission = try stream.submit()
            try submission.wait()
            let after = HostClock.nanoseconds()
            try stream.synchronize()
            let ticks = try stream.ticks(of: stamp)
            let width = after - before
            if best == nil || width < best?.width ?? .max { best = (ticks, before + width / 2, width) }
        }
        guard let best else { throw VulkanError.invalidArgument("clock calibration took no sample") }
        return GPUClock(method: .submitBracket, uncertaintyNanoseconds: Double(best.width) / 2,
                        baseTicks: best.ticks, baseHost: best.host, period: period, mask: mask)
    }

    /// One (device ticks, CLOCK_MONOTONIC) pair from VK_EXT_calibrated_timestamps, or nil
    /// where the extension or one of the two domains is missing.
    private static func calibratedSample(_ device: Device) throws -> (ticks: UInt64, host: UInt64, deviation: Double)? {
        guard device.enabled.calibratedTimestamps,
              let domainsQuery = vkattn_load_calibrateable_time_domains(device.instance.handle),
              let getTimestamps = vkattn_load_calibrated_timestamps(device.handle) else { return nil }
        var count: UInt32 = 0
        try check(domainsQuery(device.physicalDevice.handle, &count, nil), "vkGetPhysicalDeviceCalibrateableTimeDomainsEXT")
        var domains = [VkTimeDomainEXT](repeating: VK_TIME_DOMAIN_DEVICE_EXT, count: Int(count))
        try check(domainsQuery(device.physicalDevice.handle, &count, &domains), "vkGetPhysicalDeviceCalibrateableTimeDomainsEXT")
        let offered = Set(domains.prefix(Int(count)).map(\.rawValue))
        guard offered.contains(VK_TIME_DOMAIN_DEVICE_EXT.rawValue),
              offered.contains(VK_TIME_DOMAIN_CLOCK_MONOTONIC_EXT.rawValue) else { return nil }
        var infos = [VK_TIME_DOMAIN_DEVICE_EXT, VK_TIME_DOMAIN_CLOCK_MONOTONIC_EXT].map { domain -> VkCalibratedTimestampInfoEXT in
            var info = VkCalibratedTimestampInfoEXT()
            info.sType = VK_STRUCTURE_TYPE_CALIBRATED_TIMESTAMP_INFO_EXT
            info.timeDomain = domain
            return info
        }
        var best: (ticks: UInt64, host: UInt64, deviation: UInt64)?
        for _ in 0..<3 {
            var values = [UInt64](repeating: 0, count: 2)
            var deviation: UInt64 = 0
            try check(getTimestamps(device.handle, 2, &infos, &values, &deviation), "vkGetCalibratedTimestampsEXT")
            if best == nil || deviation < best?.deviation ?? .max { best = (values[0], values[1], deviation) }
        }
        return best.map { ($0.ticks, $0.host, Double($0.deviation)) }
    }
}
