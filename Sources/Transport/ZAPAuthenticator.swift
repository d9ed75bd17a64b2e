import CZMQ
import Foundation

/// One connection attempt the ZAP handler refused. Holds only public information.
public struct ZAPDenial: Sendable, CustomStringConvertible {
    /// The client's long-term public key in Z85, when it offered one (CURVE).
    public let publicKey: String?
    /// The peer's network address as libzmq reports it (an IP address for TCP).
    public let address: String
    /// The ZAP domain of the server socket that was connected to.
    public let domain: String
    /// The security mechanism the client used (`CURVE`, `NULL`, `PLAIN`).
    public let mechanism: String
    /// Why the attempt was refused.
    public let reason: String

    /// One log line: mechanism, public key, address, domain and reason.
    public var description: String {
        "denied \(mechanism) client \(publicKey ?? "(no key)") from \(address.isEmpty ? "(unknown address)" : address) "
            + "(ZAP domain \(domain)): \(reason)"
    }
}

/// The ZAP handler (RFC 27) of one `ZMQContext`: decides which clients its CURVE server sockets accept.
///
/// A REP socket bound to `inproc://zeromq.zap.01`, created, served and closed on its own thread
/// (ZeroMQ sockets belong to one thread). It accepts a CURVE client only when the client's public
/// key is in the allow-list of the server socket's ZAP domain, and refuses everything else:
/// unknown keys, unknown domains, other mechanisms, malformed requests.
///
/// Every denial is counted and reported to `onDenied` (or, when none is set, written to standard
/// error). The handler stops on `stop()`, when its context is released, or when the context is
/// terminated; server sockets created by `ZMQSocket(..., security: .curveServer(...))` enforce ZAP,
/// so once the handler is gone they refuse every new client instead of letting all in.
public final class ZAPAuthenticator: @unchecked Sendable {
    /// The endpoint libzmq sends ZAP requests to; fixed by RFC 27.
    public static let endpoint = "inproc://zeromq.zap.01"

    private let state: State
    private let thread: Thread

    /// Binds the handler in the context whose raw handle is given; returns once it is serving.
    init(contextHandle: UnsafeMutableRawPointer, allowLists: [String: Set<String>] = [:],
         onDenied: (@Sendable (ZAPDenial) -> Void)? = nil) throws {
        state = State(allowLists: allowLists, onDenied: onDenied)
        let handle = RawHandle(pointer: contextHandle)
        let state = self.state
        let started = DispatchSemaphore(value: 0)
        let startError = ErrorBox()
        thread = Thread {
            ZAPAuthenticator.serve(context: handle, state: state, started: started, startError: startError)
        }
        thread.name = "zap-authenticator"
        thread.start()
        started.wait()
        if let error = startError.error { throw error }
    }

    deinit { stop() }

    /// Refused attempts so far.
    public var deniedCount: Int { state.locked { state.denied } }
    /// Accepted CURVE clients so far.
    public var allowedCount: Int { state.locked { state.allowed } }
    /// True until the handler thread has finished.
    public var isRunning: Bool { state.locked { !state.finished } }

    /// Called on the handler's thread for every denial; must be thread-safe and quick (handshakes
    /// wait for it). When nil, denials are written to standard error.
    public var onDenied: (@Sendable (ZAPDenial) -> Void)? {
        get { state.locked { state.onDenied } }
        set { state.locked { state.onDenied = newValue } }
    }

    /// Replaces the allow-list of `domain`; takes effect for the next handshake (connected peers stay).
    public func setAllowList(_ publicKeys: Set<String>, domain: String) {
        state.locked { state.allowLists[domain] = publicKeys }
    }

    /// The allow-list of each ZAP domain.
    public var allowLists: [String: Set<String>] { state.locked { state.allowLists } }

    /// Adds `domain` with its allow-list; a domain already registered with a different list is an error,
    /// so two server sockets can never silently widen or narrow each other's access.
    func register(domain: String, allowList: Set<String>) throws {
        try state.locked {
            if let existing = state.allowLists[domain], existing != allowList {
                throw ZMQSecurityError.conflictingAllowList(domain: domain)
            }
            state.allowLists[domain] = allowList
        }
    }

    /// Stops serving and waits for the handler thread to close its socket (at most ~100 ms).
    ///
    /// Idempotent. Called from the handler's own thread (inside `onDenied`), it only asks it to stop.
    public func stop() {
        state.locked { state.stopRequested = true }
        guard Thread.current !== thread else { return }
        state.waitUntilFinished()
    }

    // MARK: - The handler thread

    private final class State: @unchecked Sendable {
        private let lock = NSLock()
        private let finishedCondition = NSCondition()
        var allowLists: [String: Set<String>]
        var onDenied: (@Sendable (ZAPDenial) -> Void)?
        var denied = 0
        var allowed = 0
        var stopRequested = false
        var finished = false

        init(allowLists: [String: Set<String>], onDenied: (@Sendable (ZAPDenial) -> Void)?) {
            self.allowLists = allowLists
            self.onDenied = onDenied
        }

        func locked<T>(_ body: () throws -> T) rethrows -> T {
            lock.lock()
            defer { lock.unlock() }
            return try body()
        }

        func markFinished() {
            locked { finished = true }
            finishedCondition.lock()
            finishedCondition.broadcast()
            finishedCondition.unlock()
        }

        func waitUntilFinished() {
            finishedCondition.lock()
            while !locked({ finished }) { finishedCondition.wait() }
            finishedCondition.unlock()
        }
    }

    private struct RawHandle: @unchecked Sendable { let pointer: UnsafeMutableRawPointer }

    private final class ErrorBox: @unchecked Sendable { var error: Error? }

    private static func serve(context: RawHandle, state: State, started: DispatchSemaphore, startError: ErrorBox) {
        guard let socket = zmq_socket(context.pointer, ZMQ_REP) else {
            startError.error = ZMQError(call: "socket(ZAP handler)", errno: zmq_errno())
            state.markFinished()
            started.signal()
            return
        }
        var linger: Int32 = 0
        zmq_setsockopt(socket, ZMQ_LINGER, &linger, MemoryLayout<Int32>.size)
        guard zmq_bind(socket, endpoint) == 0 else {
            // EADDRINUSE: another handler already serves this context; two would split requests unpredictably.
            startError.error = ZMQSecurityError.zapHandlerUnavailable(String(cString: zmq_strerror(zmq_errno())))
            zmq_close(socket)
            state.markFinished()
            started.signal()
            return
        }
        started.signal()
        defer {
            zmq_close(socket)
            state.markFinished()
        }
        while !state.locked({ state.stopRequested }) {
            var item = zmq_pollitem_t(socket: socket, fd: 0, events: Int16(ZMQ_POLLIN), revents: 0)
            // A bounded wait so stop() is noticed without a wake-up socket.
            let ready = zmq_poll(&item, 1, 100)
            if ready < 0 {
                if zmq_errno() == EINTR { continue }
                return  // ETERM: the context is being terminated.
            }
            if ready == 0 { continue }
            guard let request = receiveAll(socket) else { return }
            let (reply, denial) = decide(request, state: state)
            guard sendAll(socket, reply) else { return }
            if let denial { report(denial, state: state) }
        }
    }

    /// The reply to one ZAP request and, when it refuses, the denial to report.
    private static func decide(_ frames: [[UInt8]], state: State) -> (reply: [[UInt8]], denial: ZAPDenial?) {
        func text(_ index: Int) -> String { index < frames.count ? String(decoding: frames[index], as: UTF8.self) : "" }
        let requestID = frames.count > 1 ? frames[1] : []
        func reply(_ code: String, _ status: String, userID: String = "") -> [[UInt8]] {
            [Array("1.0".utf8), requestID, Array(code.utf8), Array(status.utf8), Array(userID.utf8), []]
        }
        let domain = text(2), address = text(3), mechanism = text(5)
        func deny(_ reason: String, key: String? = nil) -> (reply: [[UInt8]], denial: ZAPDenial?) {
            (reply("400", reason), ZAPDenial(publicKey: key, address: address, domain: domain, mechanism: mechanism, reason: reason))
        }
        guard frames.count >= 6, text(0) == "1.0" else { return deny("malformed ZAP request") }
        guard mechanism == "CURVE" else { return deny("mechanism \(mechanism) not accepted (CURVE required)") }
        guard frames.count == 7, frames[6].count == 32, let key = Z85.encode(frames[6]) else {
            return deny("malformed CURVE credentials")
        }
        let verdict: String? = state.locked {
            guard let allowList = state.allowLists[domain] else { return "no allow-list for this ZAP domain" }
            guard allowList.contains(key) else { return "public key not in the allow-list" }
            state.allowed += 1
            return nil
        }
        if let verdict { return deny(verdict, key: key) }
        // User-Id is the client's key: a server can read it from message metadata to tell peers apart.
        return (reply("200", "OK", userID: key), nil)
    }

    private static func report(_ denial: ZAPDenial, state: State) {
        let callback: (@Sendable (ZAPDenial) -> Void)? = state.locked {
            state.denied += 1
            return state.onDenied
        }
        if let callback {
            callback(denial)
        } else {
            FileHandle.standardError.write(Data("zap: \(denial)\n".utf8))
        }
    }

    private static func receiveAll(_ socket: UnsafeMutableRawPointer) -> [[UInt8]]? {
        var frames: [[UInt8]] = []
        while true {
            var message = zmq_msg_t()
            zmq_msg_init(&message)
            defer { zmq_msg_close(&message) }
            guard zmq_msg_recv(&message, socket, 0) >= 0 else { return nil }
            let size = zmq_msg_size(&message)
            frames.append(size == 0 ? [] : [UInt8](UnsafeRawBufferPointer(start: zmq_msg_data(&message), count: size)))
            if zmq_msg_more(&message) == 0 { return frames }
        }
    }

    private static func sendAll(_ socket: UnsafeMutableRawPointer, _ frames: [[UInt8]]) -> Bool {
        for (index, frame) in frames.enumerated() {
            let flags = index < frames.count - 1 ? ZMQ_SNDMORE : 0
            while frame.withUnsafeBytes({ zmq_send(socket, $0.baseAddress, $0.count, flags) }) < 0 {
                if zmq_errno() != EINTR { return false }
            }
        }
        return true
    }
}
