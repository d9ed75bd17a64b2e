import CZMQ
import Foundation

/// Why a socket's security could not be set up. Never carries key material.
public enum ZMQSecurityError: Error, CustomStringConvertible {
    /// A CURVE server with no allowed client keys would refuse everyone: almost surely a wrong folder.
    case emptyAllowList
    /// A public key given to the security settings is not 40 characters of Z85; `what` says which.
    case malformedPublicKey(what: String)
    /// ZAP domains are 1–255 bytes.
    case invalidDomain(String)
    /// Two server sockets in one context asked for different allow-lists under the same ZAP domain.
    case conflictingAllowList(domain: String)
    /// The ZAP handler could not be bound (usually: another handler already serves this context).
    case zapHandlerUnavailable(String)
    /// Some CURVE flags were given but not all a role needs; the message names the missing ones.
    case incompleteCurveFlags(String)

    /// One line saying what is wrong; never key material.
    public var description: String {
        switch self {
        case .emptyAllowList:
            return "the CURVE allow-list is empty: no client could connect (is the allow folder right?)"
        case .malformedPublicKey(let what):
            return "\(what) is not a CURVE public key (expected 40 characters of Z85)"
        case .invalidDomain(let domain):
            return "invalid ZAP domain \"\(domain)\" (1 to 255 bytes)"
        case .conflictingAllowList(let domain):
            return "ZAP domain \(domain) already has a different allow-list in this context; give this socket its own domain"
        case .zapHandlerUnavailable(let reason):
            return "cannot start the ZAP handler on \(ZAPAuthenticator.endpoint): \(reason)"
        case .incompleteCurveFlags(let message):
            return message
        }
    }
}

/// How a socket authenticates and encrypts: nothing, or CurveZMQ as a server or a client.
///
/// Values are checked when made (`curveServer`/`curveClient` throw on bad keys) and applied by
/// `ZMQSocket(_:_:security:)` before the socket can bind or connect, so a socket is never briefly
/// open in plaintext. Printing a value shows public keys only.
public struct ZMQSecurity: Sendable, CustomStringConvertible {
    enum Mechanism: Sendable {
        case none
        case curveServer(keys: CurveKeyPair, allowList: Set<String>, domain: String, peers: PeerDirectory?)
        case curveClient(keys: CurveKeyPair, serverPublicKey: String, serverRole: PeerRole?)
    }

    let mechanism: Mechanism

    /// Plaintext, unauthenticated: ZeroMQ's NULL mechanism (what every socket used before CURVE).
    public static let none = ZMQSecurity(mechanism: .none)

    /// The ZAP domain server sockets use unless told otherwise.
    public static let defaultDomain = "featurestream"

    /// A CURVE server: encrypts every connection with `keys` and accepts only clients whose public
    /// key is in `allowList` (checked by this context's `ZAPAuthenticator`, started on demand).
    ///
    /// Plaintext clients cannot complete a handshake with such a socket, and if the ZAP handler is
    /// stopped the socket refuses new clients rather than accepting any key.
    /// - Parameter domain: the ZAP domain; distinct server sockets in one context with different
    ///   allow-lists need distinct domains.
    public static func curveServer(keys: CurveKeyPair, allowList: Set<String>, domain: String = defaultDomain) throws -> ZMQSecurity {
        guard !allowList.isEmpty else { throw ZMQSecurityError.emptyAllowList }
        // The entry itself is not echoed: a misplaced secret key must not end up in an error message.
        if let bad = allowList.firstIndex(where: { !Z85.isKey($0) }) {
            throw ZMQSecurityError.malformedPublicKey(what: "allow-list entry #\(allowList.distance(from: allowList.startIndex, to: bad) + 1)")
        }
        guard (1...255).contains(domain.utf8.count) else { throw ZMQSecurityError.invalidDomain(domain) }
        return ZMQSecurity(mechanism: .curveServer(keys: keys, allowList: allowList, domain: domain, peers: nil))
    }

    /// A CURVE server whose allow-list is `peers`: every admitted key is bound to a role, which
    /// `MessageSocket` checks each message against, and `peers.reload()` updates the ZAP allow-list.
    public static func curveServer(keys: CurveKeyPair, peers: PeerDirectory, domain: String = defaultDomain) throws -> ZMQSecurity {
        let server = try curveServer(keys: keys, allowList: peers.publicKeys, domain: domain)
        guard case .curveServer(let keys, let allowList, let domain, _) = server.mechanism else { return server }
        return ZMQSecurity(mechanism: .curveServer(keys: keys, allowList: allowList, domain: domain, peers: peers))
    }

    /// A CURVE client: proves its identity with `keys` and talks only to the server holding the
    /// secret key of `serverPublicKey` (an impostor cannot complete the handshake).
    /// - Parameter serverRole: the role the server's key is bound to, when known: every message this
    ///   client receives comes from that role (CURVE proves it), so policies can be checked on clients too.
    public static func curveClient(keys: CurveKeyPair, serverPublicKey: String, serverRole: PeerRole? = nil) throws -> ZMQSecurity {
        guard Z85.isKey(serverPublicKey) else { throw ZMQSecurityError.malformedPublicKey(what: "the server public key") }
        return ZMQSecurity(mechanism: .curveClient(keys: keys, serverPublicKey: serverPublicKey, serverRole: serverRole))
    }

    /// The role-bound key table of a CURVE server made with `curveServer(keys:peers:)`; nil otherwise.
    public var peers: PeerDirectory? {
        if case .curveServer(_, _, _, let peers) = mechanism { return peers }
        return nil
    }

    /// The role of the server a CURVE client talks to, when it was given.
    public var serverRole: PeerRole? {
        if case .curveClient(_, _, let role) = mechanism { return role }
        return nil
    }

    /// True for CURVE (encrypted and authenticated) settings.
    public var isCurve: Bool {
        if case .none = mechanism { return false }
        return true
    }

    /// The mechanism and public keys; never a secret key.
    public var description: String {
        switch mechanism {
        case .none:
            return "plaintext (no CURVE)"
        case .curveServer(let keys, let allowList, let domain, _):
            return "CURVE server \(keys.publicKey), \(allowList.count) allowed client key(s), ZAP domain \(domain)"
        case .curveClient(let keys, let serverPublicKey, _):
            return "CURVE client \(keys.publicKey) to server \(serverPublicKey)"
        }
    }

    /// Sets the socket options; must run before bind/connect, which is when libzmq reads them.
    func apply(to socket: ZMQSocket) throws {
        switch mechanism {
        case .none:
            return
        case .curveServer(let keys, let allowList, let domain, let peers):
            // The handler must exist before the socket can accept anyone: libzmq lets every CURVE
            // client in when no handler is bound and ZAP is not enforced.
            let authenticator = try socket.context.startAuthenticator()
            try authenticator.register(domain: domain, allowList: allowList)
            // A reloaded key table (SIGHUP) replaces this domain's allow-list for the next handshakes.
            peers?.onChange { [weak authenticator] keys in authenticator?.setAllowList(keys, domain: domain) }
            // Then the connections a removed key still holds are closed (registered second: by the time a
            // closed peer reconnects, the handler already refuses it).
            if let peers, let connections = socket.connections {
                peers.onChange { [weak peers] keys in
                    for key in connections.close(keysNotIn: keys) { peers?.connectionClosed(key: key) }
                }
            }
            try socket.set(ZMQ_CURVE_SERVER, Int32(1), name: "CURVE_SERVER")
            try socket.setKey(ZMQ_CURVE_SECRETKEY, keys.secretKey, name: "CURVE_SECRETKEY")
            try socket.setString(ZMQ_ZAP_DOMAIN, domain, name: "ZAP_DOMAIN")
            // ZMQ_ZAP_ENFORCE_DOMAIN (93, a draft option in 4.3, present in Debian's build): without it a
            // stopped handler would mean "accept everyone". A libzmq without drafts says EINVAL;
            // the running handler still decides then.
            var enforce: Int32 = 1
            if zmq_setsockopt(socket.handle, 93, &enforce, MemoryLayout<Int32>.size) != 0 && zmq_errno() != EINVAL {
                throw ZMQError(call: "setsockopt(ZAP_ENFORCE_DOMAIN)", errno: zmq_errno())
            }
        case .curveClient(let keys, let serverPublicKey, _):
            try socket.setKey(ZMQ_CURVE_SERVERKEY, serverPublicKey, name: "CURVE_SERVERKEY")
            try socket.setKey(ZMQ_CURVE_PUBLICKEY, keys.publicKey, name: "CURVE_PUBLICKEY")
            try socket.setKey(ZMQ_CURVE_SECRETKEY, keys.secretKey, name: "CURVE_SECRETKEY")
        }
    }
}

extension ZMQSocket {
    /// The ZAP handler deciding who may connect, for a CURVE server socket; nil otherwise.
    public var authenticator: ZAPAuthenticator? {
        guard case .curveServer = security.mechanism else { return nil }
        return context.authenticator
    }

    func set<T: FixedWidthInteger>(_ option: Int32, _ value: T, name: String) throws {
        var value = value
        guard zmq_setsockopt(handle, option, &value, MemoryLayout<T>.size) == 0 else {
            throw ZMQError(call: "setsockopt(\(name))", errno: zmq_errno())
        }
    }

    /// Sets a CURVE key as Z85 text: 40 characters plus the terminating NUL (length 41), as libzmq expects.
    func setKey(_ option: Int32, _ z85: String, name: String) throws {
        var buffer = Array(z85.utf8CString)
        defer { wipe(&buffer) }
        guard buffer.count == 41 else { throw ZMQError(call: "setsockopt(\(name)): key is not 40 characters of Z85", errno: EINVAL) }
        guard zmq_setsockopt(handle, option, buffer, buffer.count) == 0 else {
            // The error names the option only, never the key.
            throw ZMQError(call: "setsockopt(\(name))", errno: zmq_errno())
        }
    }

    func setString(_ option: Int32, _ value: String, name: String) throws {
        let bytes = Array(value.utf8)
        guard zmq_setsockopt(handle, option, bytes, bytes.count) == 0 else {
            throw ZMQError(call: "setsockopt(\(name))", errno: zmq_errno())
        }
    }
}

extension ZMQContext {
    /// The ZAP handler serving this context's CURVE server sockets, once one has been created.
    public var authenticator: ZAPAuthenticator? {
        zapLock.lock()
        defer { zapLock.unlock() }
        return zapAuthenticator
    }

    /// The running ZAP handler of this context, starting it (or restarting a stopped one, with the same
    /// allow-lists and `onDenied`) if needed. Server sockets call this themselves; a role may call it
    /// first to set `onDenied` before any socket exists.
    @discardableResult
    public func startAuthenticator() throws -> ZAPAuthenticator {
        zapLock.lock()
        defer { zapLock.unlock() }
        if let current = zapAuthenticator, current.isRunning { return current }
        let previous = zapAuthenticator
        let started = try ZAPAuthenticator(contextHandle: handle, allowLists: previous?.allowLists ?? [:],
                                           onDenied: previous?.onDenied)
        zapAuthenticator = started
        return started
    }
}
