import Foundation
import Prometheus

/// Serves a Prometheus registry over plain HTTP/1.1 (`GET /metrics`, any path) on its own thread.
///
/// Deliberately minimal: one request per connection, text exposition format, no keep-alive. A
/// scrape every few seconds is all it has to carry, and it needs no HTTP stack.
public final class MetricsEndpoint: @unchecked Sendable {
    /// The port actually bound (useful when 0 was asked for).
    public let port: Int
    private let registry: PrometheusCollectorRegistry
    private let listener: Int32

    /// Binds `host:port` (port 0 picks a free one) and starts serving.
    public init(registry: PrometheusCollectorRegistry, host: String = "0.0.0.0", port: Int) throws {
        self.registry = registry
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw MetricsEndpointError("socket: errno \(errno)") }
        var yes: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr(host)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 16) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard ok else {
            close(fd)
            throw MetricsEndpointError("cannot listen on \(host):\(port): errno \(errno)")
        }
        listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        let thread = Thread { [self] in serve() }
        thread.name = "metrics"
        thread.start()
    }

    private func serve() {
        while true {
            let client = accept(listener, nil, nil)
            if client < 0 {
                if errno == EINTR { continue }
                return
            }
            var timeout = timeval(tv_sec: 2, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            // Read the request head (bounded), then answer whatever it asked.
            var request = [UInt8]()
            var chunk = [UInt8](repeating: 0, count: 1024)
            while request.count < 8192, !request.ends(with: [13, 10, 13, 10]) {
                let n = read(client, &chunk, chunk.count)
                if n <= 0 { break }
                request += chunk[0..<n]
            }
            let body = registry.emitToBuffer()
            let head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
            let response = Array(head.utf8) + body
            response.withUnsafeBytes { raw in
                var sent = 0
                while sent < raw.count {
                    let n = write(client, raw.baseAddress! + sent, raw.count - sent)
                    if n <= 0 { break }
                    sent += n
                }
            }
            close(client)
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
