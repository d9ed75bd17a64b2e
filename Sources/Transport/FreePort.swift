import Foundation

/// A TCP port on 127.0.0.1 that was free a moment ago (the kernel picked it for a socket bound to port 0).
///
/// Another process may take it before the caller binds it; on one host, for a local cluster, that race is rare.
public func freeLocalPort() throws -> Int {
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
