// Hand-written, not swift-nio's NIOHTTP1: NIO's cold build measured 100 CPU-seconds (94 user + 6 sys; swift-nio 2.101.3
// with swift-collections, swift-system and swift-atomics, alone in a fresh package, 2026-12-04; README "Security"), under
// the 2-minute bar, but it is not simpler here: the whole-request deadline, the connection cap and the bind check are this
// file's substance and would be NIO handlers of the same size, and `fetchMetrics` stays hand-written (NIO has no client).
import Foundation
import Prometheus

/// Serves a Prometheus registry over plain HTTP/1.1 (`GET /metrics`, any path).
///
/// One accept thread hands each connection to a worker thread of its own, so scrapes run
/// concurrently; each connection has a deadline (`connectionDeadline`) for its whole request, and at
/// most `maxConnections` are served at once (more are closed at once), so a client that opens a
/// connection and sends nothing (slowloris) costs one thread for at most the deadline and never
/// delays anyone else. Hand-written rather than swift-nio's NIOHTTP1 (see the top of the file): one
/// read-only text page, no keep-alive, no request body, ~100 lines.
public final class MetricsEndpoint: @unchecked Sendable {
    /// The interface endpoints bind when none is given: loopback, unless a role's `--metrics-bind` widens it.
    public nonisolated(unsafe) static var defaultHost = "127.0.0.1"
    /// Connections served at once; more are closed on arrival.
    public static let maxConnections = 32
    /// Seconds a connection may take to send its request and receive the answer.
    public static let connectionDeadline = 2.0

    /// The port actually bound (useful when 0 was asked for).
    public let port: Int
    /// The interface bound.
    public let host: String
    private let registry: PrometheusCollectorRegistry
    private let listener: Int32
    private let lock = NSLock()
    private var active = 0

    /// Binds `host:port` (port 0 picks a free one; host defaults to `defaultHost`) and starts serving.
    public init(registry: PrometheusCollectorRegistry, host: String? = nil, port: Int) throws {
        let host = host ?? Self.defaultHost
        self.registry = registry
        self.host = host
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw MetricsEndpointError("socket: errno \(errno)") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw MetricsEndpointError("metrics bind address \(host) is not an IPv4 address")
        }
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else {
            close(fd)
            throw MetricsEndpointError("cannot listen on \(host):\(port): errno \(errno)")
        }
        listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in acceptLoop() }
        thread.name = "metrics"
        thread.start()
    }

    /// Connections being served right now.
    public var activeConnections: Int { lock.withLock { active } }

    private func acceptLoop() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE { continue }
                return
            }
            let admitted = lock.withLock { () -> Bool in
                guard active < Self.maxConnections else { return false }
                active += 1
                return true
            }
            guard admitted else {
                close(client)
                continue
            }
            let worker = Thread { [self] in
                serve(client)
                close(client)
                lock.withLock { active -= 1 }
            }
            worker.name = "metrics-connection"
            worker.start()
        }
    }

    /// Reads the request head until the deadline, then answers with the page; whatever was asked.
    private func serve(_ client: Int32) {
        let deadline = Date().addingTimeInterval(Self.connectionDeadline)
        var request = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 1024)
        while request.count < 8192, !request.ends(with: [13, 10, 13, 10]) {
            let remaining = Int(deadline.timeIntervalSinceNow * 1000)
            guard remaining > 0 else { return }
            var item = pollfd(fd: client, events: Int16(POLLIN), revents: 0)
            let ready = poll(&item, 1, Int32(remaining))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0 else { return }
            let n = read(client, &chunk, chunk.count)
            if n <= 0 { return }
            request += chunk[0..<n]
        }
        var timeout = timeval(tv_sec: Int(Self.connectionDeadline), tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let body = registry.emitToBuffer()
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        let response = Array(head.utf8) + body
        response.withUnsafeBytes { raw in
            var sent = 0
            while sent < raw.count, Date() < deadline {
                let n = send(client, raw.baseAddress! + sent, raw.count - sent, Int32(MSG_NOSIGNAL))
                if n <= 0 { break }
                sent += n
            }
        }
    }
}

private extension Array where Element == UInt8 {
    func ends(with suffix: [UInt8]) -> Bool { count >= suffix.count && Array(self[(count - suffix.count)...]) == suffix }
}

/// The metrics endpoint could not start.
public struct MetricsEndpointError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Reads a Prometheus text exposition into samples: `name{labels} value`.
public struct MetricSample: Sendable {
    public var name: String
    public var labels: [String: String]
    public var value: Double

    /// Parses the text format (comments skipped; label values unescaped for `\"` and `\\`).
    public static func parse(_ text: String) -> [MetricSample] {
        text.split(separator: "\n").compactMap { line in
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                return nil
            }
            let series = line[..<space]
            guard let brace = series.firstIndex(of: "{") else { return MetricSample(name: String(series), labels: [:], value: value) }
            var labels: [String: String] = [:]
            var rest = series[series.index(after: brace)...].dropLast()
            while let equals = rest.firstIndex(of: "=") {
                let key = String(rest[..<equals]).trimmingCharacters(in: CharacterSet(charactersIn: ", "))
                var cursor = rest.index(equals, offsetBy: 2)
                var valueText = ""
                while cursor < rest.endIndex, rest[cursor] != "\"" {
                    if rest[cursor] == "\\", rest.index(after: cursor) < rest.endIndex { cursor = rest.index(after: cursor) }
                    valueText.append(rest[cursor])
                    cursor = rest.index(after: cursor)
                }
                labels[key] = valueText
                rest = cursor < rest.endIndex ? rest[rest.index(after: cursor)...] : rest[rest.endIndex...]
            }
            return MetricSample(name: String(series[..<brace]), labels: labels, value: value)
        }
    }
}

/// Fetches a metrics page with a plain HTTP/1.1 GET (`http://host:port[/path]`, IPv4 host).
public func fetchMetrics(_ url: String, timeoutSeconds: Int = 5) throws -> String {
    guard url.hasPrefix("http://") else { throw MetricsEndpointError("only http:// addresses are supported: \(url)") }
    let rest = url.dropFirst("http://".count)
    let hostPort = rest.split(separator: "/", maxSplits: 1).first.map(String.init) ?? ""
    let path = rest.contains("/") ? "/" + (rest.split(separator: "/", maxSplits: 1).last.map(String.init) ?? "") : "/metrics"
    let parts = hostPort.split(separator: ":")
    guard parts.count == 2, let port = UInt16(parts[1]) else { throw MetricsEndpointError("expected http://host:port, got \(url)") }
    var hints = addrinfo()
    hints.ai_family = AF_INET
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var result: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(String(parts[0]), String(port), &hints, &result) == 0, let info = result else {
        throw MetricsEndpointError("cannot resolve \(parts[0])")
    }
    defer { freeaddrinfo(result) }
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
        throw MetricsEndpointError("cannot connect to \(hostPort): errno \(errno)")
    }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: \(hostPort)\r\nConnection: close\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
    var response = [UInt8]()
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(fd, &chunk, chunk.count)
        if n <= 0 { break }
        response += chunk[0..<n]
    }
    let text = String(decoding: response, as: UTF8.self)
    guard let split = text.range(of: "\r\n\r\n") else { throw MetricsEndpointError("no HTTP response from \(url)") }
    return String(text[split.upperBound...])
}
