import Foundation

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it for a socket bound to port 0),
/// and never one this process was given before.
///
/// The kernel picks at random and hands a closed port out again (about 3 in 100 of 1,000 picks repeat
/// one), and the callers pick several ports before any role binds them (`featstream run`'s control,
/// data and metrics ports; a test's cluster): a repeat made a coordinator's control socket collide with
/// the head's metrics port ("Address already in use"). Remembering what was handed out rules that out;
/// another process may still take a port before the caller binds it, which on one host is rare.
public func freeLocalPort() throws -> Int {
    for _ in 0..<100 {
        let port = try kernelPickedPort()
        if HandedOutPorts.shared.claim(port) { return port }
    }
    throw ZMQError(call: "bind(127.0.0.1:0) for a free port: 100 picks all repeated a port handed out before", errno: EADDRINUSE)
}

/// The ports `freeLocalPort` has returned in this process.
private final class HandedOutPorts: @unchecked Sendable {
    static let shared = HandedOutPorts()
    private let lock = NSLock()
    private var ports: Set<Int> = []

    /// True, and remembered, when `port` was not handed out before.
    func claim(_ port: Int) -> Bool { lock.withLock { ports.insert(port).inserted } }
}

private func kernelPickedPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else { throw ZMQError(call: "bind(127.0.0.1:0) for a free port", errno: errno) }
    return Int(UInt16(bigEndian: address.sin_port))
}
