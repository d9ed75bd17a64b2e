import CZMQ
import Foundation

/// A connection a CURVE socket dropped during the ZMTP handshake: a plaintext client, a client speaking
/// another mechanism, or one that sent garbage. (Keys the ZAP handler refused are `ZAPDenial`s instead.)
public struct HandshakeFailure: Sendable, CustomStringConvertible {
    /// The socket's endpoint as libzmq reports it.
    public let endpoint: String
    /// libzmq's event: `protocol error` or `no detail`.
    public let kind: String
    /// The ZMTP protocol error code, when libzmq gave one.
    public let code: UInt32

    /// One line for the log.
    public var description: String { "failed handshake on \(endpoint) (\(kind), code 0x\(String(code, radix: 16)))" }
}

extension ZMQSocket {
    /// Called on a monitor thread for every failed handshake on this socket; setting it starts the monitor.
    ///
    /// Used on CURVE sockets so that a plaintext client knocking is counted, not only a wrong key.
    public var onHandshakeFailure: (@Sendable (HandshakeFailure) -> Void)? {
        get { monitor?.callback }
        set {
            if monitor == nil, newValue != nil { monitor = try? HandshakeMonitor(socket: self) }
            monitor?.callback = newValue
        }
    }
}

/// Reads a socket's libzmq monitor events on its own thread (ZeroMQ sockets belong to one thread).
final class HandshakeMonitor: @unchecked Sendable {
    private static let counter = NSLock()
    private nonisolated(unsafe) static var next = 0
    private let lock = NSLock()
    private var stored: (@Sendable (HandshakeFailure) -> Void)?
    private var stopRequested = false

    var callback: (@Sendable (HandshakeFailure) -> Void)? {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }

    /// Told of every closed connection's descriptor (`ZMQ_EVENT_DISCONNECTED`).
    private let connections: PeerConnections?

    init(socket: ZMQSocket) throws {
        connections = socket.connections
        let number = Self.counter.withLock { () -> Int in
            Self.next += 1
            return Self.next
        }
        let endpoint = "inproc://featstream-monitor-\(getpid())-\(number)"
        let events = ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL
            | (connections == nil ? 0 : ZMQ_EVENT_DISCONNECTED)
        guard zmq_socket_monitor(socket.handle, endpoint, events) == 0 else {
            throw ZMQError(call: "socket_monitor", errno: zmq_errno())
        }
        guard let pair = zmq_socket(socket.context.handle, ZMQ_PAIR) else { throw ZMQError(call: "socket(PAIR)", errno: zmq_errno()) }
        var linger: Int32 = 0
        zmq_setsockopt(pair, ZMQ_LINGER, &linger, MemoryLayout<Int32>.size)
        guard zmq_connect(pair, endpoint) == 0 else {
            zmq_close(pair)
            throw ZMQError(call: "connect(\(endpoint))", errno: zmq_errno())
        }
        let box = RawPointer(pointer: pair)
        // The PAIR socket was made here but is used only by the thread from now on (handed over, not shared).
        let thread = Thread { [self] in serve(box.pointer) }
        thread.name = "zmq-monitor"
        thread.start()
    }

    func stop() { lock.withLock { stopRequested = true } }

    private struct RawPointer: @unchecked Sendable { let pointer: UnsafeMutableRawPointer }

    private func serve(_ pair: UnsafeMutableRawPointer) {
        defer { zmq_close(pair) }
        while !lock.withLock({ stopRequested }) {
            var item = zmq_pollitem_t(socket: pair, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
            let ready = zmq_poll(&item, 1, 100)
            if ready < 0 {
                if zmq_errno() == EINTR { continue }
                return  // ETERM: the context is going away.
            }
            if ready == 0 { continue }
            var frames: [[UInt8]] = []
            while true {
                var message = zmq_msg_t()
                zmq_msg_init(&message)
                defer { zmq_msg_close(&message) }
                guard zmq_msg_recv(&message, pair, 0) >= 0 else { return }
                let size = zmq_msg_size(&message)
                frames.append(size == 0 ? [] : [UInt8](UnsafeRawBufferPointer(start: zmq_msg_data(&message), count: size)))
                if zmq_msg_more(&message) == 0 { break }
            }
            // Frame 1: event (16 bits) and value (32 bits), native byte order; frame 2: the endpoint.
            guard frames.count >= 2, frames[0].count >= 6 else { continue }
            let event = Int32(UInt16(frames[0][0]) | UInt16(frames[0][1]) << 8)
            let value = frames[0][2..<6].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) }
            if event == ZMQ_EVENT_DISCONNECTED {
                // The value is the descriptor libzmq is closing.
                connections?.forget(fd: Int32(bitPattern: value))
                continue
            }
            let kind = event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ? "protocol error" : "no detail"
            callback?(HandshakeFailure(endpoint: String(decoding: frames[1], as: UTF8.self), kind: kind, code: value))
        }
    }
}
