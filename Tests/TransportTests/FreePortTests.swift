import Transport
import XCTest

final class FreePortTests: XCTestCase {
    /// The kernel repeats about 3 in 100 of 1,000 random port picks; `freeLocalPort` never returns a port it
    /// returned before, so roles given ports before any of them binds cannot collide.
    func testFreeLocalPortNeverRepeatsAPort() throws {
        let ports = try (0..<1000).map { _ in try freeLocalPort() }
        XCTAssertEqual(Set(ports).count, ports.count)
    }
}
