import Foundation
import Logging
import Transport
import WireProtocol

/// Monotonic milliseconds, the clock every state machine is fed.
func nowMs() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
}

/// A random 64-bit incarnation number, so peers notice a restart.
func newEpoch() -> UInt64 { UInt64.random(in: 1...UInt64.max) }

/// Counters every role keeps about what arrived on its sockets.
public struct WireCounters: Sendable {
    /// Frames that failed to decode (bad magic, version, length, checksum, limits), by reason.
    public var rejectedFrames: [String: Int] = [:]
    /// Well-formed messages that made no sense where they arrived.
    public var unexpectedMessages = 0
    public var framesIn = 0
    public var framesOut = 0
    public var bytesIn = 0
    public var bytesOut = 0

    /// All rejected frames.
    public var rejectedTotal: Int { rejectedFrames.values.reduce(0, +) }

    mutating func reject(_ reason: String) { rejectedFrames[reason, default: 0] += 1 }

}

/// Messages in and out of one ZeroMQ socket, with frame decoding and counting in one place.
final class MessageSocket {
    let socket: ZMQSocket
    var counters = WireCounters()
    let log: RoleLog
    /// Told the reason of every rejected frame (for metrics).
    var onReject: ((String) -> Void)?

    init(_ socket: ZMQSocket, log: RoleLog) {
        self.socket = socket
        self.log = log
    }

    /// Sends to a ROUTER peer (`to` is its identity) or, on a DEALER, to the connected peer.
    @discardableResult
    func send(_ message: Message, to identity: [UInt8]? = nil) -> Bool {
        let frame = FrameCodec.encode(message)
        let frames = identity.map { [$0, frame] } ?? [frame]
        do {
            guard try socket.send(frames) else { return false }
        } catch {
            log.event("send failed: \(error)")
            return false
        }
        counters.framesOut += 1
        counters.bytesOut += frame.count
        return true
    }

    /// The next decodable message waiting on the socket, skipping (and counting) malformed frames.
    func receive() -> (identity: [UInt8]?, message: Message)? {
        while true {
            let frames: [[UInt8]]?
            do { frames = try socket.receive() } catch {
                log.event("receive failed: \(error)")
                return nil
            }
            guard let frames else { return nil }
            let expected = socket.kind == .router ? 2 : 1
            guard frames.count == expected else {
                counters.reject("frame_count")
                onReject?("frame_count")
                log.event("rejected a message of \(frames.count) frames (expected \(expected))")
                continue
            }
            let payload = frames[expected - 1]
            counters.framesIn += 1
            counters.bytesIn += payload.count
            do {
                let message = try FrameCodec.decode(payload)
                return (socket.kind == .router ? frames[0] : nil, message)
            } catch {
                counters.reject(error.counterName)
                onReject?(error.counterName)
                log.event("rejected frame of \(payload.count) bytes: \(error)")
            }
        }
    }
}

/// One readable line per event on standard error, `HH:MM:SS role: message`, through swift-log.
///
/// Roles log with a `Logger` labelled by the role; `RoleLineHandler` gives each event one line that
/// people and scripts (the launcher's `[host role]` prefixes, the tests) can read.
public final class RoleLog: @unchecked Sendable {
    /// The swift-log logger every event goes through.
    public let logger: Logger

    /// A log for `role` (for example `coordinator` or `worker w3`).
    public init(role: String) {
        logger = Logger(label: role) { RoleLineHandler(role: $0) }
    }

    /// Logs one event at info level.
    public func event(_ text: String) { logger.info("\(text)") }
}

/// A swift-log handler writing `HH:MM:SS role: message [key=value ...]` lines to standard error.
public struct RoleLineHandler: LogHandler {
    private static let lock = NSLock()
    let role: String
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .info

    public init(role: String) { self.role = role }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let stamp = ISO8601DateFormatter.string(from: Date(), timeZone: .current, formatOptions: [.withTime, .withColonSeparatorInTime])
        let merged = metadata.merging(event.metadata ?? [:]) { $1 }
        let extra = merged.isEmpty ? "" : " " + merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let level = event.level >= .warning ? "\(event.level): " : ""
        Self.lock.lock()
        FileHandle.standardError.write(Data("\(stamp) \(role): \(level)\(event.message)\(extra)\n".utf8))
        Self.lock.unlock()
    }
}
