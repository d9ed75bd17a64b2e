import CZMQ
import Foundation
@testable import Transport
import XCTest

/// CurveZMQ with a ZAP allow-list over real TCP sockets on 127.0.0.1.
final class CurveSecurityTests: XCTestCase {
    /// A CURVE ROUTER bound on a free port, with its own context (as in a server process).
    struct Server {
        let keys: CurveKeyPair
        let socket: ZMQSocket
        let endpoint: String
        let denials: DenialLog
    }

    /// Denials as the ZAP thread reports them.
    final class DenialLog: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [ZAPDenial] = []
        func add(_ denial: ZAPDenial) { lock.lock(); items.append(denial); lock.unlock() }
        var all: [ZAPDenial] { lock.lock(); defer { lock.unlock() }; return items }
    }

    func makeServer(allow: Set<String>) throws -> Server {
        let context = ZMQContext()
        let keys = try CurveKeyPair.generate()
        let socket = try ZMQSocket(context, .router, security: .curveServer(keys: keys, allowList: allow))
        let denials = DenialLog()
        socket.authenticator!.onDenied = { denials.add($0) }
        let endpoint = try socket.bind("tcp://127.0.0.1:\(try freeLocalPort())")
        return Server(keys: keys, socket: socket, endpoint: endpoint, denials: denials)
    }

    /// A DEALER in its own context; `queueWhileUnconnected` lets it queue messages before (or without)
    /// a completed handshake, so a test shows the server refuses them rather than the client never sending.
    func makeClient(_ security: ZMQSecurity, to endpoint: String, queueWhileUnconnected: Bool = false) throws -> (ZMQContext, ZMQSocket) {
        let context = ZMQContext()
        let socket = try ZMQSocket(context, .dealer, security: security)
        if queueWhileUnconnected { try socket.set(ZMQ_IMMEDIATE, Int32(0)) }
        try socket.connect(endpoint)
        return (context, socket)
    }

    /// Sends until accepted (a CURVE DEALER cannot queue before its handshake), for up to `seconds`.
    func sendEventually(_ socket: ZMQSocket, _ frames: [[UInt8]], seconds: Double = 5) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try socket.send(frames) { return true }
            usleep(10_000)
        }
        return false
    }

    /// The next message on `socket` within `seconds`, or nil.
    func receive(_ socket: ZMQSocket, seconds: Double) throws -> [[UInt8]]? {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if let message = try socket.receive() { return message }
            _ = try waitForInput([socket], timeoutMs: 20)
        }
        return nil
    }

    /// Waits until `condition` holds, for up to `seconds`.
    func eventually(seconds: Double = 5, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(10_000)
        }
        return condition()
    }

    func exchange(server: Server, client: ZMQSocket, tag: UInt8) throws {
        XCTAssertTrue(try sendEventually(client, [[tag, 1, 2, 3]]), "the allowed client never completed its handshake")
        let request = try XCTUnwrap(try receive(server.socket, seconds: 5), "the server never received the allowed client's message")
        XCTAssertEqual(request.count, 2)
        XCTAssertEqual(request.last, [tag, 1, 2, 3])
        XCTAssertTrue(try server.socket.send([request[0], [tag, 9]]))
        XCTAssertEqual(try receive(client, seconds: 5), [[tag, 9]])
    }

    // (a)
    func testAllowedClientExchangesMessagesWithCurveRouter() throws {
        let clientKeys = try CurveKeyPair.generate()
        let server = try makeServer(allow: [clientKeys.publicKey])
        let (_, client) = try makeClient(.curveClient(keys: clientKeys, serverPublicKey: server.keys.publicKey), to: server.endpoint)
        try exchange(server: server, client: client, tag: 1)
        XCTAssertEqual(server.socket.authenticator?.deniedCount, 0)
        XCTAssertGreaterThanOrEqual(server.socket.authenticator?.allowedCount ?? 0, 1)
    }

    // (b)
    func testUnknownKeyGetsNothingThroughAndIsCounted() throws {
        let allowed = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let server = try makeServer(allow: [allowed.publicKey])
        let (_, intruder) = try makeClient(.curveClient(keys: stranger, serverPublicKey: server.keys.publicKey),
                                           to: server.endpoint, queueWhileUnconnected: true)
        for _ in 0..<5 { XCTAssertTrue(try intruder.send([[0xBA, 0xD0]])) }
        XCTAssertTrue(eventually { (server.socket.authenticator?.deniedCount ?? 0) >= 1 }, "no denial was counted")
        XCTAssertNil(try receive(server.socket, seconds: 1.0), "a message from an unknown key reached the server")
        let denial = try XCTUnwrap(server.denials.all.first)
        XCTAssertEqual(denial.publicKey, stranger.publicKey)
        XCTAssertEqual(denial.mechanism, "CURVE")
        XCTAssertEqual(denial.address, "127.0.0.1")
        XCTAssertEqual(denial.domain, ZMQSecurity.defaultDomain)
        XCTAssertEqual(server.socket.authenticator?.allowedCount, 0)
    }

    // (c)
    func testPlaintextClientGetsNothingThrough() throws {
        let allowed = try CurveKeyPair.generate()
        let server = try makeServer(allow: [allowed.publicKey])
        let (_, plaintext) = try makeClient(.none, to: server.endpoint, queueWhileUnconnected: true)
        for _ in 0..<5 { XCTAssertTrue(try plaintext.send([[0x0B, 0xAD]])) }
        XCTAssertNil(try receive(server.socket, seconds: 1.5), "a plaintext message reached the CURVE server")
        // The mechanism mismatch ends the handshake at the greeting: ZAP never sees, let alone allows, it.
        XCTAssertEqual(server.socket.authenticator?.allowedCount, 0)
        XCTAssertNil(try plaintext.receive())
    }

    // A client that has the wrong idea of the server's key cannot talk to it either (no impostor server).
    func testClientWithWrongServerKeyGetsNothingThrough() throws {
        let clientKeys = try CurveKeyPair.generate()
        let server = try makeServer(allow: [clientKeys.publicKey])
        let (_, client) = try makeClient(.curveClient(keys: clientKeys, serverPublicKey: try CurveKeyPair.generate().publicKey),
                                         to: server.endpoint, queueWhileUnconnected: true)
        XCTAssertTrue(try client.send([[7]]))
        XCTAssertNil(try receive(server.socket, seconds: 1.0))
    }

    // (d)
    func testServerKeepsServingAllowedClientDuringAndAfterBadAttempts() throws {
        let allowed = try CurveKeyPair.generate()
        let server = try makeServer(allow: [allowed.publicKey])
        var attackers: [(ZMQContext, ZMQSocket)] = []
        for _ in 0..<3 {
            attackers.append(try makeClient(.curveClient(keys: try CurveKeyPair.generate(), serverPublicKey: server.keys.publicKey),
                                            to: server.endpoint, queueWhileUnconnected: true))
            attackers.append(try makeClient(.none, to: server.endpoint, queueWhileUnconnected: true))
        }
        for (_, attacker) in attackers { _ = try attacker.send([[0xEE]]) }
        XCTAssertTrue(eventually { (server.socket.authenticator?.deniedCount ?? 0) >= 3 })
        // The attackers keep reconnecting while the allowed client works.
        let (_, client) = try makeClient(.curveClient(keys: allowed, serverPublicKey: server.keys.publicKey), to: server.endpoint)
        for round in 0..<5 { try exchange(server: server, client: client, tag: UInt8(10 + round)) }
        attackers.removeAll()
        XCTAssertNil(try server.socket.receive(), "an attacker's message arrived")
        let (_, late) = try makeClient(.curveClient(keys: allowed, serverPublicKey: server.keys.publicKey), to: server.endpoint)
        try exchange(server: server, client: late, tag: 20)
        XCTAssertTrue(server.denials.all.allSatisfy { $0.publicKey != allowed.publicKey })
    }

    // With the handler stopped the server must fail closed, not accept any CURVE client.
    func testStoppedAuthenticatorRefusesEveryone() throws {
        let allowed = try CurveKeyPair.generate()
        let server = try makeServer(allow: [allowed.publicKey])
        server.socket.authenticator!.stop()
        XCTAssertFalse(server.socket.authenticator!.isRunning)
        let (_, client) = try makeClient(.curveClient(keys: allowed, serverPublicKey: server.keys.publicKey),
                                         to: server.endpoint, queueWhileUnconnected: true)
        XCTAssertTrue(try client.send([[1]]))
        XCTAssertNil(try receive(server.socket, seconds: 1.0))
    }

    func testContextReleaseStopsTheHandlerThread() throws {
        let allowed = try CurveKeyPair.generate()
        var authenticator: ZAPAuthenticator?
        do {
            let server = try makeServer(allow: [allowed.publicKey])
            authenticator = server.socket.authenticator
            XCTAssertTrue(authenticator!.isRunning)
        }
        // Server (socket and context) released: the context's deinit stops and joins the handler.
        XCTAssertFalse(authenticator!.isRunning)
    }

    func testSecurityValidation() throws {
        let keys = try CurveKeyPair.generate()
        XCTAssertThrowsError(try ZMQSecurity.curveServer(keys: keys, allowList: []))
        XCTAssertThrowsError(try ZMQSecurity.curveServer(keys: keys, allowList: ["short"]))
        XCTAssertThrowsError(try ZMQSecurity.curveClient(keys: keys, serverPublicKey: "not a key"))
        // One domain, two different allow-lists in one context: refused rather than merged.
        let context = ZMQContext()
        _ = try ZMQSocket(context, .router, security: .curveServer(keys: keys, allowList: [keys.publicKey]))
        XCTAssertThrowsError(try ZMQSocket(context, .router, security: .curveServer(keys: keys, allowList: [try CurveKeyPair.generate().publicKey])))
        _ = try ZMQSocket(context, .router, security: .curveServer(keys: keys, allowList: [keys.publicKey], domain: "other"))
        XCTAssertEqual(context.authenticator?.allowLists.count, 2)
    }

    // (e)
    func testKeyFilesModesAndAllowList() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("curve-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        // The modes must not depend on the umask (0 would make a naive create world-readable).
        let savedMask = umask(0)
        let result = try runCurveKeygen(outDirectory: directory.path, name: "worker-1")
        umask(savedMask)
        XCTAssertEqual(try mode(result.secretFile), 0o600)
        XCTAssertEqual(try mode(result.publicFile), 0o644)
        XCTAssertEqual(result.publicFile.lastPathComponent, "worker-1.pub")
        XCTAssertEqual(result.secretFile.lastPathComponent, "worker-1.key")
        XCTAssertTrue(try FileManager.default.contentsOfDirectory(atPath: directory.path).allSatisfy { !$0.contains(".tmp-") })

        let loaded = try CurveKeyPair.load(directory: directory, name: "worker-1")
        XCTAssertEqual(loaded.publicKey, result.publicKey)
        XCTAssertEqual(CurveKeyPair.derivePublicKey(secretKey: loaded.secretKey), result.publicKey)

        // Never overwrite an existing identity.
        XCTAssertThrowsError(try runCurveKeygen(outDirectory: directory.path, name: "worker-1"))
        XCTAssertThrowsError(try runCurveKeygen(outDirectory: directory.path, name: "../escape"))

        // A group/world-readable secret key is refused, naming the file.
        chmod(result.secretFile.path, 0o644)
        XCTAssertThrowsError(try CurveKeyPair.load(directory: directory, name: "worker-1")) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains(result.secretFile.path), text)
            XCTAssertTrue(text.contains("644"), text)
        }
        chmod(result.secretFile.path, 0o640)
        XCTAssertThrowsError(try CurveKeyPair.load(directory: directory, name: "worker-1"))
        chmod(result.secretFile.path, 0o600)
        XCTAssertNoThrow(try CurveKeyPair.load(directory: directory, name: "worker-1"))

        // A secret key that does not match the public key is refused.
        let other = try CurveKeyPair.generate()
        try other.write(to: directory, name: "other")
        XCTAssertThrowsError(try CurveKeyPair.load(publicFile: result.publicFile,
                                                   secretFile: directory.appendingPathComponent("other.key")))

        // The allow-list: every *.pub, and nothing from the .key files beside them.
        let allow = try CurveKeyPair.loadPublicKeys(directory: directory)
        XCTAssertEqual(allow, [result.publicKey, other.publicKey])
        try Data("garbage\n".utf8).write(to: directory.appendingPathComponent("bad.pub"))
        XCTAssertThrowsError(try CurveKeyPair.loadPublicKeys(directory: directory))
        XCTAssertThrowsError(try CurveKeyPair.loadPublicKeys(directory: directory.appendingPathComponent("missing")))
    }

    // (f)
    func testNoSecretKeyInDescriptionsOrLogLines() throws {
        let serverKeys = try CurveKeyPair.generate()
        let clientKeys = try CurveKeyPair.generate()
        let stranger = try CurveKeyPair.generate()
        let server = try makeServer(allow: [clientKeys.publicKey])
        let (_, intruder) = try makeClient(.curveClient(keys: stranger, serverPublicKey: server.keys.publicKey),
                                           to: server.endpoint, queueWhileUnconnected: true)
        _ = try intruder.send([[1]])
        XCTAssertTrue(eventually { !server.denials.all.isEmpty })

        var dumped = ""
        dump(stranger, to: &dumped)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("curve-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let written = try runCurveKeygen(outDirectory: directory.path, name: "head")
        let writtenPair = try CurveKeyPair.load(directory: directory, name: "head")
        chmod(written.secretFile.path, 0o644)
        var loadError = ""
        do { _ = try CurveKeyPair.load(directory: directory, name: "head") } catch { loadError = "\(error)" }
        XCTAssertFalse(loadError.isEmpty)

        var lines: [String] = [
            "\(serverKeys)", String(reflecting: serverKeys), "\(stranger)", dumped, "\(clientKeys)",
            "\(try ZMQSecurity.curveServer(keys: serverKeys, allowList: [clientKeys.publicKey]))",
            "\(try ZMQSecurity.curveClient(keys: clientKeys, serverPublicKey: serverKeys.publicKey))",
            "\(server.socket.security)", "\(written)", "\(writtenPair)", loadError,
        ]
        lines += server.denials.all.map(\.description)
        let secrets = [serverKeys, clientKeys, stranger, server.keys, writtenPair].map(\.secretKey)
        for line in lines {
            for secret in secrets {
                XCTAssertFalse(line.contains(secret), "secret key in: \(line)")
            }
        }
        XCTAssertTrue(lines[0].contains(serverKeys.publicKey))
        let denial = try XCTUnwrap(server.denials.all.first)
        XCTAssertTrue(denial.description.contains(stranger.publicKey))
        XCTAssertTrue(denial.description.contains("127.0.0.1"))
    }

    /// The role rule in one place: keys, or plaintext on loopback only, or plaintext remote with both flags.
    func testRoleSecurityRefusesPlaintextUnlessAskedAndOnLoopback() throws {
        XCTAssertThrowsError(try RoleSecurity(role: "coordinator", keysDirectory: nil, insecurePlaintext: false,
                                              allowRemotePlaintext: false, endpoints: ["tcp://127.0.0.1:1"])) {
            XCTAssertTrue("\($0)".contains("--keys DIR") && "\($0)".contains("--insecure-plaintext"), "\($0)")
        }
        let local = try RoleSecurity(role: "coordinator", keysDirectory: nil, insecurePlaintext: true, allowRemotePlaintext: false,
                                     endpoints: ["tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:2"])
        XCTAssertFalse(try local.coordinatorControl().isCurve)
        XCTAssertTrue(local.plaintextWarning?.contains("WARNING") == true)
        for remote in ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.0.0.1:5555", "tcp://example.org:1"] {
            XCTAssertThrowsError(try RoleSecurity(role: "head", keysDirectory: nil, insecurePlaintext: true, allowRemotePlaintext: false,
                                                  endpoints: [remote]), remote) {
                XCTAssertTrue("\($0)".contains("--allow-remote-plaintext"), "\($0)")
            }
            XCTAssertNotNil(try RoleSecurity(role: "head", keysDirectory: nil, insecurePlaintext: true, allowRemotePlaintext: true,
                                             endpoints: [remote]).plaintextWarning)
        }
        XCTAssertThrowsError(try RoleSecurity(role: "head", keysDirectory: "/k", insecurePlaintext: true, allowRemotePlaintext: false, endpoints: []))
    }

    /// `ClusterKeyFolder`: one pair per role and worker, private modes, role-bound peer tables, revocation by reload.
    func testKeyFolderBindsKeysToRolesAndReloadRevokes() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let folder = try ClusterKeyFolder.generate(at: directory.path, workers: ["w0", "w1"])
        XCTAssertEqual(try mode(directory), 0o700)
        XCTAssertEqual(try mode(directory.appendingPathComponent("workers")), 0o700)
        for file in ["coordinator.key", "head.key", "workers/w0.key", "workers/w1.key"] {
            XCTAssertEqual(try mode(directory.appendingPathComponent(file)), 0o600, file)
        }
        let w0 = try folder.publicKey(.worker("w0")), head = try folder.publicKey(.head)
        XCTAssertNotEqual(w0, try folder.publicKey(.worker("w1")), "every worker has its own key")
        let coordinatorPeers = try folder.peers(admittedBy: .coordinator)
        XCTAssertEqual(coordinatorPeers.role(of: head), .head)
        XCTAssertEqual(coordinatorPeers.role(of: w0), .worker("w0"))
        XCTAssertNil(coordinatorPeers.role(of: try folder.publicKey(.coordinator)))
        let headPeers = try folder.peers(admittedBy: .head)
        XCTAssertNil(headPeers.role(of: head), "the head does not admit itself")
        XCTAssertEqual(headPeers.counts[.worker], 2)
        // Generating again keeps every existing key and adds only new workers.
        try ClusterKeyFolder.generate(at: directory.path, workers: ["w0", "w1", "w2"])
        XCTAssertEqual(try folder.publicKey(.worker("w0")), w0)
        XCTAssertEqual(try folder.workerKeys().count, 3)
        // Revocation: remove w0's .pub, reload; its key maps to no role and leaves the allow-list.
        try FileManager.default.removeItem(at: directory.appendingPathComponent("workers/w0.pub"))
        let changed = ChangeLog()
        coordinatorPeers.onChange { changed.keys = $0 }
        try coordinatorPeers.reload()
        XCTAssertNil(coordinatorPeers.role(of: w0))
        XCTAssertEqual(changed.keys?.contains(w0), false)
        XCTAssertEqual(changed.keys?.contains(head), true)
        XCTAssertThrowsError(try folder.pair(.worker("../head")))
        // A host needs only its own secret key: the public key is derived (w0's .pub was removed above).
        XCTAssertEqual(try folder.pair(.worker("w0")).publicKey, w0)
    }

    final class ChangeLog: @unchecked Sendable { var keys: Set<String>? }

    /// The ZAP handler's User-Id (the client's key) arrives with every message, so a server knows
    /// which key sent it; a reload that drops a key stops new handshakes with it.
    func testServerLearnsTheSendersKeyAndReloadRevokesNewHandshakes() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let folder = try ClusterKeyFolder.generate(at: directory.path, workers: ["w0", "w1"])
        let context = ZMQContext()
        let peers = try folder.peers(admittedBy: .head)
        let server = try ZMQSocket(context, .router, security: .curveServer(keys: folder.pair(.head), peers: peers))
        let endpoint = try server.bind("tcp://127.0.0.1:\(try freeLocalPort())")
        let w1Security = try ZMQSecurity.curveClient(keys: folder.pair(.worker("w1")), serverPublicKey: folder.publicKey(.head), serverRole: .head)
        let (c0, s0) = try makeClient(.curveClient(keys: folder.pair(.worker("w0")), serverPublicKey: folder.publicKey(.head), serverRole: .head),
                                      to: endpoint)
        XCTAssertTrue(try sendEventually(s0, [[1]]))
        var received: (frames: [[UInt8]], peerKey: String?)?
        XCTAssertTrue(eventually { received = try? server.receiveWithPeer(); return received != nil })
        XCTAssertEqual(received?.peerKey, try folder.publicKey(.worker("w0")))
        XCTAssertEqual(peers.role(of: received!.peerKey!), .worker("w0"))
        // Revoke w1 before it connects: its handshake is refused.
        try FileManager.default.removeItem(at: directory.appendingPathComponent("workers/w1.pub"))
        try peers.reload()
        let deniedBefore = server.authenticator!.deniedCount
        let (c1, s1) = try makeClient(w1Security, to: endpoint)
        XCTAssertFalse(try sendEventually(s1, [[2]], seconds: 1.5))
        XCTAssertTrue(eventually { server.authenticator!.deniedCount > deniedBefore })
        _ = (c0, c1)
    }

    /// Revoking a key closes the TCP connections it already holds: after the reload, the revoked client's
    /// connection is shut down (it reconnects and the ZAP handler refuses its key), while another worker's
    /// connection on the same socket keeps working; a revoked connection the server had not yet read
    /// from is closed when its first message is read.
    func testReloadClosesTheRevokedKeysOpenConnections() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("keys-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        let folder = try ClusterKeyFolder.generate(at: directory.path, workers: ["w0", "w1", "w2"])
        let context = ZMQContext()
        let peers = try folder.peers(admittedBy: .head)
        let server = try ZMQSocket(context, .router, security: .curveServer(keys: folder.pair(.head), peers: peers))
        let denials = DenialLog()
        server.authenticator!.onDenied = { denials.add($0) }
        let endpoint = try server.bind("tcp://127.0.0.1:\(try freeLocalPort())")
        func client(_ name: String) throws -> (ZMQContext, ZMQSocket) {
            try makeClient(.curveClient(keys: folder.pair(.worker(name)), serverPublicKey: folder.publicKey(.head), serverRole: .head), to: endpoint)
        }
        let (c0, w0) = try client("w0"), (c1, w1) = try client("w1")
        // w0 and w1 speak, and the server reads them (so it knows their connections).
        var identities: [String: [UInt8]] = [:]
        for (name, socket) in [("w0", w0), ("w1", w1)] {
            XCTAssertTrue(try sendEventually(socket, [Array(name.utf8)]))
            var received: (frames: [[UInt8]], peerKey: String?)?
            XCTAssertTrue(eventually { received = try? server.receiveWithPeer(); return received != nil })
            XCTAssertEqual(received?.peerKey, try folder.publicKey(.worker(name)))
            identities[name] = received?.frames[0]
        }
        // w2 sends once, but the server does not read it before the revocation.
        let (c2, w2) = try client("w2")
        XCTAssertTrue(try sendEventually(w2, [[2]]))
        let w0Key = try folder.publicKey(.worker("w0")), w2Key = try folder.publicKey(.worker("w2"))
        XCTAssertEqual(server.connections?.count(of: w0Key), 1)

        try FileManager.default.removeItem(at: directory.appendingPathComponent("workers/w0.pub"))
        try FileManager.default.removeItem(at: directory.appendingPathComponent("workers/w2.pub"))
        try peers.reload()
        // w0's connection was shut down at the reload: its socket reconnects and the handler refuses its key.
        XCTAssertTrue(eventually { denials.all.contains { $0.publicKey == w0Key } }, "w0's connection was not closed")
        XCTAssertEqual(peers.closedConnections, 1)
        XCTAssertEqual(server.connections?.count(of: w0Key), 0)
        // w1 is untouched: the server still reaches it over the same connection.
        XCTAssertTrue(try server.send([identities["w1"]!, [5]]))
        XCTAssertEqual(try receive(w1, seconds: 5), [[5]])
        // w2's queued message is read now: handed up with its key (for the caller to drop and count), and
        // its connection is closed then.
        var late: (frames: [[UInt8]], peerKey: String?)?
        XCTAssertTrue(eventually { late = try? server.receiveWithPeer(); return late != nil })
        XCTAssertEqual(late?.peerKey, w2Key)
        XCTAssertEqual(late?.frames.last, [2])
        XCTAssertTrue(eventually { denials.all.contains { $0.publicKey == w2Key } }, "w2's connection was not closed")
        XCTAssertEqual(peers.closedConnections, 2)
        // Nothing more from either revoked key reaches the server, and replies to them cannot be routed.
        _ = try w0.send([[7]])
        _ = try w2.send([[7]])
        XCTAssertFalse(eventually(seconds: 1) { ((try? server.receiveWithPeer()) ?? nil) != nil })
        XCTAssertFalse(try server.send([identities["w0"]!, [9]]))
        _ = (c0, c1, c2)
    }

    /// A plaintext client knocking on a CURVE socket is seen (and can be counted), not only wrong keys.
    func testFailedPlaintextHandshakeIsReported() throws {
        let server = try makeServer(allow: [try CurveKeyPair.generate().publicKey])
        let failures = FailureLog()
        server.socket.onHandshakeFailure = { failures.add($0) }
        let (context, client) = try makeClient(.none, to: server.endpoint, queueWhileUnconnected: true)
        _ = try client.send([[1, 2, 3]])
        XCTAssertTrue(eventually { failures.count > 0 }, "no handshake failure reported")
        XCTAssertNil(try server.socket.receive())
        _ = context
    }

    final class FailureLog: @unchecked Sendable {
        private let lock = NSLock()
        private var items: [HandshakeFailure] = []
        func add(_ failure: HandshakeFailure) { lock.withLock { items.append(failure) } }
        var count: Int { lock.withLock { items.count } }
    }

    private func mode(_ file: URL) throws -> mode_t {
        var info = stat()
        guard stat(file.path, &info) == 0 else { throw CurveKeyError.io(path: file.path, call: "stat", errno: errno) }
        return info.st_mode & 0o777
    }
}
