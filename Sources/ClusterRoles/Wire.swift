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

/// Which messages a socket accepts from which role: the one place where keys are bound to roles.
///
/// On a CURVE server socket the sender is the key the ZAP handler authenticated (looked up in the
/// socket's `PeerDirectory`); on a CURVE client it is the server whose key the client pinned. A
/// message its sender's role may not send is dropped and counted (`wrong_role`), as is a message
/// from a key the directory no longer knows (`revoked_key`, after a SIGHUP reload). On a plaintext
/// socket (`--insecure-plaintext`) no role is known: a message is accepted when any role may send it.
struct MessagePolicy: Sendable {
    /// Message kinds each role may send to this socket.
    let allowed: [PeerRole.Kind: Set<MessageType>]

    /// The coordinator's control socket: the head's commit path, and the workers' lease protocol.
    static let coordinatorControl = MessagePolicy(allowed: [
        .head: [.headHello, .shardCommitted, .heartbeat],
        .worker: [.hello, .heartbeat, .shardRequest, .shardDone, .shardFailed],
    ])
    /// The head's data socket: only workers, only the data-plane session.
    static let headData = MessagePolicy(allowed: [.worker: [.hello, .heartbeat, .featureBatch]])
    /// The head's control socket: only the coordinator, which alone may end the job.
    static let headControl = MessagePolicy(allowed: [.coordinator: [.welcome, .heartbeat, .shutdown]])
    /// A worker's control socket: the coordinator's leases.
    static let workerControl = MessagePolicy(allowed: [.coordinator: [.welcome, .assignment, .probe, .noWork, .shutdown, .heartbeat]])
    /// A worker's data socket: the head's credits.
    static let workerData = MessagePolicy(allowed: [.head: [.credit, .heartbeat]])

    /// Nil when `kind` from `role` is allowed; otherwise the counter reason for dropping it.
    func refusal(_ kind: MessageType, from role: PeerRole.Kind?) -> String? {
        guard let role else { return allowed.values.contains { $0.contains(kind) } ? nil : "wrong_role" }
        return allowed[role]?.contains(kind) == true ? nil : "wrong_role"
    }
}

extension Message {
    /// The worker name a message claims to come from, for messages that carry one.
    var claimedWorkerID: String? {
        switch self {
        case .hello(let workerID, _, _, _), .shardRequest(let workerID): return workerID
        default: return nil
        }
    }
}

/// Messages in and out of one ZeroMQ socket, with frame decoding, counting and the role policy in one place.
final class MessageSocket {
    let socket: ZMQSocket
    var counters = WireCounters()
    let log: RoleLog
    let policy: MessagePolicy
    private let rejectSink = RejectSink()
    /// Told the reason of every rejected frame, refused message and refused handshake (for metrics).
    var onReject: ((String) -> Void)? {
        get { rejectSink.callback }
        set { rejectSink.callback = newValue }
    }

    init(_ socket: ZMQSocket, log: RoleLog, accepting policy: MessagePolicy) {
        self.socket = socket
        self.log = log
        self.policy = policy
        // Refused CURVE handshakes happen on the ZAP handler's thread; they are counted with the rest.
        if let authenticator = socket.authenticator {
            authenticator.onDenied = { [log, rejectSink] denial in
                rejectSink.report("curve_denied")
                log.event("refused a connection: \(denial)")
            }
        }
        // Servers only: a client's failed handshakes are its server restarting, not an attack on it.
        if socket.authenticator != nil {
            socket.onHandshakeFailure = { [log, rejectSink] failure in
                rejectSink.report("handshake_failed")
                log.event("refused a connection: \(failure)")
            }
        }
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

    /// The next decodable message its sender's role may send, skipping (and counting) malformed frames
    /// and refused messages.
    func receive() -> (identity: [UInt8]?, message: Message)? {
        while true {
            let received: (frames: [[UInt8]], peerKey: String?)?
            do { received = try socket.receiveWithPeer() } catch {
                log.event("receive failed: \(error)")
                return nil
            }
            guard let (frames, peerKey) = received else { return nil }
            let expected = socket.kind == .router ? 2 : 1
            guard frames.count == expected else {
                reject("frame_count", "rejected a message of \(frames.count) frames (expected \(expected))")
                continue
            }
            let payload = frames[expected - 1]
            counters.framesIn += 1
            counters.bytesIn += payload.count
            let message: Message
            do {
                message = try FrameCodec.decode(payload)
            } catch {
                reject(error.counterName, "rejected frame of \(payload.count) bytes: \(error)")
                continue
            }
            let kind = message.type
            var role: PeerRole.Kind?
            if let peers = socket.security.peers {
                // A CURVE server: the ZAP handler admitted this key; is it (still) bound to a role?
                guard let key = peerKey, let peer = peers.role(of: key) else {
                    let fingerprint = peerKey.map(keyFingerprint) ?? "(none)"
                    reject("revoked_key", "dropped a \(kind) message from key \(fingerprint), which is no longer allowed")
                    continue
                }
                role = peer.kind
                // A worker key speaks only for its own worker: the name it claims is its key's name,
                // or that name followed by "@host" (as `launch` names workers).
                if case .worker(let keyName) = peer, let claimed = message.claimedWorkerID,
                   claimed != keyName && !claimed.hasPrefix(keyName + "@") {
                    reject("wrong_name", "dropped a \(kind) message naming worker \(claimed) from key \(keyFingerprint(key)) (worker \(keyName))")
                    continue
                }
            } else if let server = socket.security.serverRole {
                role = server.kind
            }
            if let reason = policy.refusal(kind, from: role) {
                let sender = peerKey.map { "key \(keyFingerprint($0))" } ?? (role.map { "the \($0.rawValue)" } ?? "a plaintext peer")
                let asRole = role.map { " (a \($0.rawValue) key)" } ?? ""
                reject(reason, "dropped a \(kind) message from \(sender)\(asRole): not allowed on this socket")
                continue
            }
            return (socket.kind == .router ? frames[0] : nil, message)
        }
    }

    private func reject(_ reason: String, _ line: String) {
        counters.reject(reason)
        rejectSink.report(reason)
        log.event(line)
    }
}

/// The metrics callback for rejections, shared with the ZAP and monitor threads.
private final class RejectSink: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: ((String) -> Void)?

    var callback: ((String) -> Void)? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }

    func report(_ reason: String) { callback?(reason) }
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
