import CZMQ
import Foundation

/// A ZeroMQ failure: which call, and libzmq's own message.
public struct ZMQError: Error, CustomStringConvertible {
    public let call: String
    public let errno: Int32
    public var description: String { "zmq \(call): \(String(cString: zmq_strerror(errno)))" }
}

/// One libzmq context per process; sockets keep it alive.
public final class ZMQContext: @unchecked Sendable {
    let handle: UnsafeMutableRawPointer
    /// Guards `zapAuthenticator`: server sockets may be created on different threads.
    let zapLock = NSLock()
    /// The ZAP handler, started by the first CURVE server socket (see CurveSecurity.swift).
    var zapAuthenticator: ZAPAuthenticator?

    /// Creates a context with libzmq's default I/O thread.
    public init() {
        handle = zmq_ctx_new()
    }

    deinit {
        // The handler's socket must be closed first, or zmq_ctx_term would wait on it.
        zapAuthenticator?.stop()
        zmq_ctx_term(handle)
    }
}

/// A DEALER or ROUTER socket carrying multipart messages of byte frames.
///
/// Not thread-safe, like every ZeroMQ socket: one socket belongs to one thread. Every queue is
/// bounded by the high-water marks given at creation, so a stalled peer cannot grow memory.
public final class ZMQSocket {
    /// The two socket types FeatureStream uses.
    public enum Kind {
        /// Connects out; one frame per message at the application level.
        case dealer
        /// Binds; each received message is prefixed by the sender's routing identity.
        case router

        var raw: Int32 { self == .dealer ? ZMQ_DEALER : ZMQ_ROUTER }
    }

    let handle: UnsafeMutableRawPointer
    let context: ZMQContext
    public let kind: Kind
    /// The security the socket was created with (CURVE server or client, or plaintext).
    public let security: ZMQSecurity
    /// Reports failed handshakes (once `onHandshakeFailure` is set) and closed connections (for `connections`).
    var monitor: HandshakeMonitor?
    /// The connections of each authenticated key, on a CURVE server socket with a `PeerDirectory`: what
    /// revoking a key closes (see `PeerConnections`).
    let connections: PeerConnections?

    /// Creates a socket with bounded queues and no linger on close.
    ///
    /// - Parameters:
    ///   - highWaterMark: messages queued per peer in each direction before sends fail or block.
    ///   - maxMessageBytes: libzmq drops larger messages before they are buffered (defence in depth;
    ///     the frame codec enforces the protocol's own limits and counts rejections).
    ///   - security: CURVE server or client settings (see `ZMQSecurity`), applied before the socket can
    ///     bind or connect; plaintext by default.
    public init(_ context: ZMQContext, _ kind: Kind, highWaterMark: Int32 = 64, maxMessageBytes: Int64 = 128 << 20,
                identity: String? = nil, security: ZMQSecurity = .none) throws {
        guard let socket = zmq_socket(context.handle, kind.raw) else { throw ZMQError(call: "socket", errno: zmq_errno()) }
        handle = socket
        self.context = context
        self.kind = kind
        self.security = security
        connections = security.peers == nil ? nil : PeerConnections()
        try set(ZMQ_SNDHWM, highWaterMark)
        try set(ZMQ_RCVHWM, highWaterMark)
        try set(ZMQ_LINGER, Int32(0))
        try set(ZMQ_MAXMSGSIZE, maxMessageBytes)
        // Reconnect with exponential backoff from 100 ms to 5 s when a peer restarts.
        try set(ZMQ_RECONNECT_IVL, Int32(100))
        try set(ZMQ_RECONNECT_IVL_MAX, Int32(5000))
        if kind == .dealer {
            // Never queue messages for a peer that is not connected: a restarted peer must not get stale traffic.
            try set(ZMQ_IMMEDIATE, Int32(1))
        } else {
            // Report unroutable replies (a peer that went away) instead of dropping them silently.
            try set(ZMQ_ROUTER_MANDATORY, Int32(1))
        }
        if let identity {
            try Array(identity.utf8).withUnsafeBytes { raw in
                guard zmq_setsockopt(handle, ZMQ_ROUTING_ID, raw.baseAddress, raw.count) == 0 else {
                    throw ZMQError(call: "setsockopt(ROUTING_ID)", errno: zmq_errno())
                }
            }
        }
        try security.apply(to: self)
        // The monitor tells `connections` which descriptors closed, so a reused one is never shut down.
        if connections != nil { monitor = try HandshakeMonitor(socket: self) }
    }

    deinit {
        if monitor != nil {
            zmq_socket_monitor(handle, nil, 0)
            monitor?.stop()
        }
        zmq_close(handle)
    }

    func set<T: FixedWidthInteger>(_ option: Int32, _ value: T) throws {
        var value = value
        guard zmq_setsockopt(handle, option, &value, MemoryLayout<T>.size) == 0 else {
            throw ZMQError(call: "setsockopt(\(option))", errno: zmq_errno())
        }
    }

    /// Binds to `tcp://host:port` (port 0 or `*` picks a free one); returns the bound endpoint.
    @discardableResult
    public func bind(_ endpoint: String) throws -> String {
        guard zmq_bind(handle, endpoint) == 0 else { throw ZMQError(call: "bind(\(endpoint))", errno: zmq_errno()) }
        var buffer = [CChar](repeating: 0, count: 256)
        var size = buffer.count
        guard zmq_getsockopt(handle, ZMQ_LAST_ENDPOINT, &buffer, &size) == 0 else { return endpoint }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Connects to `tcp://host:port`; libzmq keeps reconnecting in the background.
    public func connect(_ endpoint: String) throws {
        guard zmq_connect(handle, endpoint) == 0 else { throw ZMQError(call: "connect(\(endpoint))", errno: zmq_errno()) }
    }

    /// Sends one multipart message without blocking; returns false when it cannot be queued now
    /// (no connected peer, the peer is gone, or its queue is at the high-water mark).
    @discardableResult
    public func send(_ frames: [[UInt8]]) throws -> Bool {
        for (index, frame) in frames.enumerated() {
            let flags = ZMQ_DONTWAIT | (index < frames.count - 1 ? ZMQ_SNDMORE : 0)
            let rc = frame.withUnsafeBytes { zmq_send(handle, $0.baseAddress, $0.count, flags) }
            if rc < 0 {
                let error = zmq_errno()
                // EAGAIN: full or unconnected; EHOSTUNREACH: a ROUTER peer that left. Both are "not now".
                if error == EAGAIN || error == EHOSTUNREACH { return false }
                throw ZMQError(call: "send", errno: error)
            }
        }
        return true
    }

    /// Receives one multipart message if one is waiting.
    public func receive() throws -> [[UInt8]]? {
        try receiveWithPeer()?.frames
    }

    /// Receives one multipart message if one is waiting, with the public key (Z85) that authenticated
    /// the connection it came on: the ZAP handler's User-Id, present on CURVE server sockets only.
    public func receiveWithPeer() throws -> (frames: [[UInt8]], peerKey: String?)? {
        var frames: [[UInt8]] = []
        while true {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            let rc = zmq_msg_recv(&message, handle, frames.isEmpty ? ZMQ_DONTWAIT : 0)
            if rc < 0 {
                let error = zmq_errno()
                if error == EAGAIN && frames.isEmpty { return nil }
                throw ZMQError(call: "recv", errno: error)
            }
            let size = zmq_msg_size(&message)
            let data = zmq_msg_data(&message)!
            frames.append([UInt8](UnsafeRawBufferPointer(start: data, count: size)))
            if zmq_msg_more(&message) == 0 {
                // Metadata is per connection; libzmq attaches it to every frame of the message.
                let userID = zmq_msg_gets(&message, "User-Id").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
                if let connections, let userID {
                    let fd = zmq_msg_get(&message, ZMQ_SRCFD)
                    connections.record(fd: fd, key: userID)
                    // A key revoked after this connection was authenticated: close it now (the message itself
                    // is returned, for the caller to drop and count as its policy says).
                    if let peers = security.peers, peers.role(of: userID) == nil, connections.close(fd: fd, key: userID) {
                        peers.connectionClosed(key: userID)
                    }
                }
                return (frames, userID)
            }
        }
    }
}

/// Waits up to `timeoutMs` for any of `sockets` to have input, or for `wakeup` to be signalled; returns
/// which sockets have input (a wakeup is consumed here and shows only as an early return).
public func waitForInput(_ sockets: [ZMQSocket], wakeup: Wakeup? = nil, timeoutMs: Int) throws -> [Bool] {
    var items = sockets.map { zmq_pollitem_t(socket: $0.handle, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0) }
    if let wakeup { items.append(zmq_pollitem_t(socket: nil, fd: wakeup.descriptor, events: Int16(ZMQ_POLLIN), revents: 0)) }
    let rc = zmq_poll(&items, Int32(items.count), timeoutMs)
    if rc < 0 {
        let error = zmq_errno()
        if error == EINTR { return sockets.map { _ in false } }
        throw ZMQError(call: "poll", errno: error)
    }
    if let wakeup, items[sockets.count].revents & Int16(ZMQ_POLLIN) != 0 { wakeup.consume() }
    return items.prefix(sockets.count).map { $0.revents & Int16(ZMQ_POLLIN) != 0 }
}

/// Lets another thread end a driver's `waitForInput` at once (a self-pipe), so that a socket loop can wait
/// for its sockets and for work handed over by a thread of its own without polling on a short timer.
public final class Wakeup: @unchecked Sendable {
    /// The pipe's read end, which `waitForInput` polls.
    public let descriptor: Int32
    private let writeEnd: Int32

    /// Creates the pipe; throws when the process is out of descriptors.
    public init() throws {
        var ends: [Int32] = [0, 0]
        guard pipe(&ends) == 0 else { throw ZMQError(call: "pipe", errno: errno) }
        for end in ends {
            _ = fcntl(end, F_SETFL, fcntl(end, F_GETFL) | O_NONBLOCK)
            _ = fcntl(end, F_SETFD, FD_CLOEXEC)
        }
        descriptor = ends[0]
        writeEnd = ends[1]
    }

    deinit {
        close(descriptor)
        close(writeEnd)
    }

    /// Ends the current or next `waitForInput` that polls this wakeup. Safe from any thread; a full pipe
    /// (signals nobody consumed yet) is as good as one more byte.
    public func signal() {
        var byte: UInt8 = 1
        _ = write(writeEnd, &byte, 1)
    }

    /// Clears every signal so far (called by `waitForInput`).
    func consume() {
        var bytes = [UInt8](repeating: 0, count: 64)
        while read(descriptor, &bytes, bytes.count) == bytes.count {}
    }
}
