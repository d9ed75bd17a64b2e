import CZMQ
import Foundation

/// The TCP connections of one CURVE server socket, by the public key that authenticated each, so that a
/// revoked key's open connections can be closed, not just ignored.
///
/// libzmq (4.3) has no call that drops one peer of a bound socket: `zmq_disconnect` only undoes the socket's
/// own `connect`s, and a ROUTER's accepted peers are not addressable (libzmq issues #2319, #2877, #4281).
/// What it does give is the file descriptor a message arrived on (`ZMQ_SRCFD`, deprecated but present) and
/// a monitor event when a connection goes away (`ZMQ_EVENT_DISCONNECTED`, whose value is that descriptor).
/// So every received message records `descriptor → key`, the monitor forgets descriptors that closed, and
/// revoking a key `shutdown(2)`s its descriptors. libzmq still owns them: it sees end-of-file, tears the
/// session down and closes the descriptor itself (closing it here would race its I/O thread). The peer's
/// socket then reconnects and meets the ZAP handler, which no longer knows the key.
///
/// A descriptor is shut down only while it still leads to the peer address recorded with it, so one that
/// libzmq closed and the kernel reused for another connection is never touched. A connection that never
/// sent a message is unknown here; it is closed when it first speaks (`receiveWithPeer` shuts down the
/// connection of any message whose key the socket's `PeerDirectory` no longer knows).
final class PeerConnections: @unchecked Sendable {
    private struct Entry {
        var key: String
        var peer: String
    }

    private let lock = NSLock()
    private var entries: [Int32: Entry] = [:]
    /// Connections shut down because their key was revoked, since the socket was made.
    private(set) var closedCount = 0

    /// Notes that a message authenticated as `key` arrived on descriptor `fd` (cheap when already known).
    func record(fd: Int32, key: String) {
        guard fd >= 0 else { return }
        let known = lock.withLock { entries[fd]?.key == key }
        if known { return }
        // A descriptor seen for the first time (or reused by a new connection): remember where it leads.
        guard let peer = Self.peerAddress(fd) else { return }
        lock.withLock { entries[fd] = Entry(key: key, peer: peer) }
    }

    /// The connection on `fd` went away (monitor event); its descriptor may be reused from now on.
    func forget(fd: Int32) {
        _ = lock.withLock { entries.removeValue(forKey: fd) }
    }

    /// Shuts down every recorded connection whose key is not in `allowed`; returns the keys affected.
    @discardableResult
    func close(keysNotIn allowed: Set<String>) -> [String] {
        let doomed = lock.withLock { entries.filter { !allowed.contains($0.value.key) } }
        var closed: [String] = []
        for (fd, entry) in doomed where shutDown(fd: fd, expecting: entry) { closed.append(entry.key) }
        return closed
    }

    /// Shuts down the connection on `fd` if it is the one recorded for `key`.
    @discardableResult
    func close(fd: Int32, key: String) -> Bool {
        guard let entry = lock.withLock({ entries[fd] }), entry.key == key else { return false }
        return shutDown(fd: fd, expecting: entry)
    }

    /// Connections currently recorded for `key`.
    func count(of key: String) -> Int { lock.withLock { entries.values.filter { $0.key == key }.count } }

    private func shutDown(fd: Int32, expecting entry: Entry) -> Bool {
        // Still the same connection (same peer address and port)? Otherwise libzmq closed it already.
        guard Self.peerAddress(fd) == entry.peer else {
            forget(fd: fd)
            return false
        }
        guard Foundation.shutdown(fd, Int32(SHUT_RDWR)) == 0 else { return false }
        lock.withLock {
            entries.removeValue(forKey: fd)
            closedCount += 1
        }
        return true
    }

    /// `address:port` of the TCP peer on `fd`, or nil when `fd` is not a connected IPv4/IPv6 socket.
    static func peerAddress(_ fd: Int32) -> String? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        guard rc == 0 else { return nil }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        var port = [CChar](repeating: 0, count: Int(NI_MAXSERV))
        let named = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), &port, socklen_t(port.count), NI_NUMERICHOST | NI_NUMERICSERV)
            }
        }
        guard named == 0 else { return nil }
        func text(_ buffer: [CChar]) -> String { String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) }
        return text(host) + ":" + text(port)
    }
}
