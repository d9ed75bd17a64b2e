import Foundation

/// Which part a CURVE key plays in a cluster: the one fact the role policy of every socket is checked against.
public enum PeerRole: Hashable, Sendable, CustomStringConvertible {
    case coordinator
    case head
    /// A worker; `name` is its key's name in the key folder (`workers/NAME.pub`).
    case worker(String)

    /// The role without the worker's name, for policies and metric labels.
    public var kind: Kind {
        switch self {
        case .coordinator: return .coordinator
        case .head: return .head
        case .worker: return .worker
        }
    }

    /// A role's kind, which is what message policies are written against.
    public enum Kind: String, Hashable, Sendable {
        case coordinator, head, worker
    }

    /// `coordinator`, `head` or `worker NAME`.
    public var description: String {
        switch self {
        case .coordinator: return "coordinator"
        case .head: return "head"
        case .worker(let name): return "worker \(name)"
        }
    }
}

/// The public keys a server socket accepts and the role each one is bound to.
///
/// The ZAP handler admits exactly these keys, and `MessageSocket` looks the authenticated key of every
/// incoming message up here, so "which key may connect" and "which key may send what" cannot drift
/// apart. Thread-safe; `reload()` (for instance on SIGHUP) replaces the table and the ZAP allow-list
/// together, which is how a removed worker key is revoked: new handshakes are refused, the TCP
/// connections it already had are closed (see `PeerConnections`), and any message of it still queued
/// is dropped because the key no longer maps to a role.
public final class PeerDirectory: @unchecked Sendable {
    private let lock = NSLock()
    private var roles: [String: PeerRole]
    private let loader: (@Sendable () throws -> [String: PeerRole])?
    private var listeners: [@Sendable (Set<String>) -> Void] = []
    private var closedReporter: (@Sendable (String) -> Void)?
    private var closed = 0

    /// A fixed table (tests, or a folder read once).
    public init(_ roles: [String: PeerRole]) {
        self.roles = roles
        loader = nil
    }

    /// A table read by `loader` now and again on every `reload()`.
    public init(loader: @escaping @Sendable () throws -> [String: PeerRole]) throws {
        roles = try loader()
        self.loader = loader
    }

    /// The role bound to `publicKey`, or nil for a key this directory does not (or no longer) know.
    public func role(of publicKey: String) -> PeerRole? { lock.withLock { roles[publicKey] } }

    /// Every key admitted, for the ZAP allow-list.
    public var publicKeys: Set<String> { lock.withLock { Set(roles.keys) } }

    /// How many keys each role kind has.
    public var counts: [PeerRole.Kind: Int] {
        lock.withLock { Dictionary(roles.values.map { ($0.kind, 1) }, uniquingKeysWith: +) }
    }

    /// Called with the new key set after every successful reload (the ZAP handler's allow-list follows it).
    func onChange(_ listener: @escaping @Sendable (Set<String>) -> Void) {
        lock.withLock { listeners.append(listener) }
    }

    /// Connections of revoked keys closed so far, on every server socket using this directory.
    public var closedConnections: Int { lock.withLock { closed } }

    /// Called with one log line for every connection of a revoked key that a server socket closed.
    public var onConnectionClosed: (@Sendable (String) -> Void)? {
        get { lock.withLock { closedReporter } }
        set { lock.withLock { closedReporter = newValue } }
    }

    /// A server socket closed a connection authenticated by `key`, which this directory no longer knows.
    func connectionClosed(key: String) {
        let reporter = lock.withLock { () -> (@Sendable (String) -> Void)? in
            closed += 1
            return closedReporter
        }
        let line = "closed a connection of the revoked key \(keyFingerprint(key))"
        if let reporter { reporter(line) } else { FileHandle.standardError.write(Data("\(line)\n".utf8)) }
    }

    /// Reads the table again; on error the old table stays in force and the error is thrown.
    @discardableResult
    public func reload() throws -> [String: PeerRole] {
        guard let loader else { return lock.withLock { roles } }
        let fresh = try loader()
        let notify = lock.withLock { () -> [@Sendable (Set<String>) -> Void] in
            roles = fresh
            return listeners
        }
        for listener in notify { listener(Set(fresh.keys)) }
        return fresh
    }

    /// Reloads on every SIGHUP, reporting each outcome to `report` (a log line). Keep the returned source.
    public func reloadOnHangup(report: @escaping @Sendable (String) -> Void) -> DispatchSourceSignal {
        onConnectionClosed = report
        signal(SIGHUP, SIG_IGN)
        let source = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .global())
        source.setEventHandler { [self] in
            do {
                let table = try self.reload()
                let workers = table.values.filter { $0.kind == .worker }.count
                report("SIGHUP: reloaded the allowed keys (\(table.count) keys, \(workers) workers)")
            } catch {
                report("SIGHUP: could not reload the allowed keys, keeping the old ones: \(error)")
            }
        }
        source.resume()
        return source
    }
}

/// A short, printable identifier of a public key for logs: its first 12 Z85 characters.
/// Public keys are not secret; the prefix only keeps log lines short.
public func keyFingerprint(_ publicKey: String) -> String { String(publicKey.prefix(12)) }
