import ClusterLaunch
import XCTest

/// The cluster-file parser: every mistake must name the file, the line and the key. No root needed.
final class ClusterFileTests: XCTestCase {
    static let valid = """
    # a comment line
    [ssh]
    config = "/tmp/ssh_config"   # trailing comment
    user = 'root'
    options = ["ServerAliveInterval=5", "Compression=no",]

    [job]
    featstream = "/opt/fs/featstream"
    model = "/m"
    data = "/d"
    split = "val"
    limit = 1_000

    [coordinator]
    host = "c1"
    address = "10.0.0.1"
    port = 5555
    journal = "/j/coordinator.journal"
    lease_ms = 3000

    [head]
    host = "root@10.0.0.2"
    port = 5556
    store = "/s/store"

    [keys]
    dir = "/k"

    [[workers]]
    host = "w1"
    count = 2
    threads = 1

    [[workers]]
    host = "w2"
    data = "/other/d"
    """

    func parse(_ text: String, environment: [String: String] = [:]) throws -> ClusterDefinition {
        try ClusterFile.parse(text: text, file: "test.toml", environment: environment)
    }

    /// Asserts that `text` fails with an error on `line` about `key` whose message contains `fragment`.
    func assertError(_ text: String, line: Int, key: String?, _ fragment: String, file: StaticString = #filePath, lineNumber: UInt = #line) {
        do {
            _ = try parse(text)
            XCTFail("parsed without error", file: file, line: lineNumber)
        } catch let error as ClusterFileError {
            XCTAssertEqual(error.file, "test.toml", file: file, line: lineNumber)
            XCTAssertEqual(error.line, line, "\(error)", file: file, line: lineNumber)
            XCTAssertEqual(error.key, key, "\(error)", file: file, line: lineNumber)
            XCTAssertTrue(error.message.contains(fragment), "\(error)", file: file, line: lineNumber)
            XCTAssertTrue(error.description.hasPrefix(line > 0 ? "test.toml:\(line):" : "test.toml:"), error.description, file: file, line: lineNumber)
        } catch {
            XCTFail("unexpected error \(error)", file: file, line: lineNumber)
        }
    }

    /// Replaces the first line of `valid` that starts with `prefix`.
    func valid(replacing prefix: String, with replacement: String) -> String {
        var lines = Self.valid.components(separatedBy: "\n")
        let index = lines.firstIndex { $0.hasPrefix(prefix) }!
        lines[index] = replacement
        return lines.joined(separator: "\n")
    }

    func lineOf(_ prefix: String) -> Int { Self.valid.components(separatedBy: "\n").firstIndex { $0.hasPrefix(prefix) }! + 1 }

    func testValidFileAndPlan() throws {
        let d = try parse(Self.valid)
        XCTAssertEqual(d.ssh.configFile, "/tmp/ssh_config")
        XCTAssertEqual(d.ssh.user, "root")
        XCTAssertEqual(d.ssh.options, ["ServerAliveInterval=5", "Compression=no"])
        XCTAssertEqual(d.job.limit, 1000)
        XCTAssertEqual(d.coordinatorAddress, "tcp://10.0.0.1:5555")
        XCTAssertEqual(d.headAddress, "tcp://10.0.0.2:5556", "a user@host destination names the address")
        XCTAssertEqual(d.workers.map(\.count), [2, 1])
        XCTAssertEqual(d.workers[1].data, "/other/d")
        XCTAssertEqual(d.workers[0].data, "/d")

        let roles = Launcher.plan(d)
        XCTAssertEqual(roles.map(\.label), ["coordinator", "head", "worker1", "worker2", "worker3"])
        XCTAssertEqual(roles.map(\.host), ["c1", "root@10.0.0.2", "w1", "w1", "w2"])
        let coordinator = roles[0].command
        XCTAssertEqual(Array(coordinator.prefix(2)), ["/opt/fs/featstream", "coordinator"])
        XCTAssertTrue(coordinator.joined(separator: " ").contains("--head tcp://10.0.0.2:5556"))
        XCTAssertTrue(coordinator.joined(separator: " ").contains("--split val --limit 1000"))
        XCTAssertTrue(coordinator.joined(separator: " ").contains("--lease-ms 3000"))
        // Every role runs CurveZMQ with the one key folder; each worker has its own key.
        for role in roles { XCTAssertTrue(role.command.joined(separator: " ").hasSuffix("--keys /k"), role.command.joined(separator: " ")) }
        XCTAssertEqual(roles.compactMap(\.keyName), ["worker1", "worker2", "worker3"])
        XCTAssertTrue(roles[3].command.joined(separator: " ").contains("--key-name worker2"))
        // Workers never open the dataset: their assignments carry each item's locator.
        for worker in roles[2...] { XCTAssertFalse(worker.command.contains("--data"), worker.command.joined(separator: " ")) }
        // The host that mounts the corpus elsewhere maps the coordinator's folder onto its own.
        XCTAssertTrue(roles[4].command.joined(separator: " ").contains("--path-map /d=/other/d"), roles[4].command.joined(separator: " "))
        XCTAssertFalse(roles[2].command.contains("--path-map"))
    }

    func testEnvironmentExpansion() throws {
        let text = valid(replacing: "featstream =", with: "featstream = \"${FS_BIN}\"")
            .replacingOccurrences(of: "model = \"/m\"", with: "model = \"${FS_REPO:-/repo}/models/m\"")
        let d = try parse(text, environment: ["FS_BIN": "/b/featstream"])
        XCTAssertEqual(d.coordinator.placement.featstream, "/b/featstream")
        XCTAssertEqual(d.workers[0].model, "/repo/models/m")
        assertError(valid(replacing: "featstream =", with: "featstream = \"${FS_BIN}\""), line: lineOf("featstream ="),
                    key: "job.featstream", "FS_BIN is not set")
    }

    func testUnknownKey() {
        assertError(valid(replacing: "threads = 1", with: "thread = 1"), line: lineOf("threads = 1"), key: "workers.thread", "unknown key")
    }

    func testUnknownTable() {
        assertError(Self.valid + "\n[workerz]\nhost = \"x\"", line: lineOf("host = \"w2\"") + 2, key: "[workerz]", "unknown table")
    }

    func testMissingRequiredKey() {
        assertError(valid(replacing: "journal =", with: "# no journal"), line: lineOf("[coordinator]"), key: "coordinator.journal", "required key is missing")
        assertError(valid(replacing: "port = 5556", with: ""), line: lineOf("[head]"), key: "head.port", "required key is missing")
    }

    func testMissingTables() {
        let noWorkers = Self.valid.components(separatedBy: "\n[[workers]]")[0]
        assertError(noWorkers, line: 0, key: "[[workers]]", "at least one")
        assertError("[ssh]\nuser = \"root\"\n", line: 0, key: "[coordinator]", "required table is missing")
    }

    func testMissingBinaryNamesWhereToSetIt() {
        assertError(valid(replacing: "featstream =", with: ""), line: lineOf("[coordinator]"), key: "coordinator.featstream", "[job]")
    }

    func testWrongTypes() {
        assertError(valid(replacing: "port = 5555", with: "port = \"5555\""), line: lineOf("port = 5555"), key: "coordinator.port",
                    "expected an integer, found a string")
        assertError(valid(replacing: "count = 2", with: "count = true"), line: lineOf("count = 2"), key: "workers.count",
                    "expected an integer, found a boolean")
        assertError(valid(replacing: "options =", with: "options = \"x\""), line: lineOf("options ="), key: "ssh.options",
                    "expected an array of strings")
        assertError(valid(replacing: "host = \"w1\"", with: "host = [\"w1\"]"), line: lineOf("host = \"w1\""), key: "workers.host",
                    "expected a string")
        assertError(valid(replacing: "port = 5555", with: "port = 5.5"), line: lineOf("port = 5555"), key: "coordinator.port", "unsupported value")
        assertError(valid(replacing: "port = 5555", with: "port = 70000"), line: lineOf("port = 5555"), key: "coordinator.port", "out of range")
        assertError(valid(replacing: "split =", with: "split = \"test\""), line: lineOf("split ="), key: "job.split", "not train or val")
    }

    func testDuplicates() {
        // The same host and port for two listeners.
        assertError(valid(replacing: "host = \"root@10.0.0.2\"", with: "host = \"c1\"\naddress = \"10.0.0.1\"")
                        .replacingOccurrences(of: "port = 5556", with: "port = 5555"),
                    line: lineOf("port = 5556") + 1, key: "head.port", "duplicate host/port")
        // The same host in two [[workers]] tables.
        assertError(valid(replacing: "host = \"w2\"", with: "host = \"w1\""), line: lineOf("host = \"w2\""), key: "workers.host", "duplicate host 'w1'")
        // A key or a table given twice.
        // (Syntax errors carry TOMLKit's wording; the line and key are ours.)
        assertError(valid(replacing: "threads = 1", with: "threads = 1\nthreads = 2"), line: lineOf("threads = 1") + 1, key: "workers.threads",
                    "cannot redefine existing integer 'threads'")
        assertError(Self.valid + "\n[head]", line: Self.valid.components(separatedBy: "\n").count + 1, key: "[head]", "cannot redefine existing table")
    }

    func testSyntaxErrors() {
        // Syntax errors carry TOMLKit's wording; the line and the key are ours.
        assertError(valid(replacing: "user =", with: "user = \"root"), line: lineOf("user ="), key: "ssh.user", "Error while parsing string")
        assertError(valid(replacing: "user =", with: "user \"root\""), line: lineOf("user ="), key: "ssh.user", "expected '='")
        assertError(valid(replacing: "user =", with: "user = \"root\" extra"), line: lineOf("user ="), key: "ssh.user", "expected a comment or whitespace")
        assertError(valid(replacing: "user =", with: "a.b = 1"), line: lineOf("user ="), key: "ssh.a", "dotted keys")
        assertError(valid(replacing: "user =", with: "user = { name = \"root\" }"), line: lineOf("user ="), key: "ssh.user", "inline tables")
        assertError(valid(replacing: "user =", with: "since = 2026-01-01"), line: lineOf("user ="), key: "ssh.since", "unsupported value")
        assertError("port = 1\n" + Self.valid, line: 1, key: "port", "outside any table")
        assertError(valid(replacing: "[[workers]]", with: "[workers]"), line: lineOf("[[workers]]"), key: "[workers]", "[[workers]]")
        assertError(valid(replacing: "[head]", with: "[[head]]"), line: lineOf("[head]"), key: "[[head]]", "only [[workers]] may repeat")
        assertError(valid(replacing: "options =", with: "options = [\"a\", 1]"), line: lineOf("options ="), key: "ssh.options", "only strings")
    }

    func testUnreadableFileNamesIt() {
        XCTAssertThrowsError(try ClusterFile.parse(path: "/nonexistent/cluster.toml")) { error in
            XCTAssertEqual((error as? ClusterFileError)?.description, "/nonexistent/cluster.toml: cannot read the file")
        }
    }

    /// The files shipped in Cluster/ must parse (with the defaults their ${...} references carry).
    func testShippedFilesParse() throws {
        let cluster = repositoryRoot.appendingPathComponent("Cluster")
        let example = try ClusterFile.parse(path: cluster.appendingPathComponent("example.toml").path)
        XCTAssertEqual(Launcher.plan(example).count, 6)
        let netns = try ClusterFile.parse(text: String(contentsOf: cluster.appendingPathComponent("netns.toml"), encoding: .utf8),
                                          file: "netns.toml", environment: [:])
        XCTAssertEqual(Launcher.plan(netns).map(\.host), ["fs-h1", "fs-h2", "fs-h3", "fs-h4"])
        XCTAssertEqual(netns.coordinatorAddress, "tcp://10.77.0.11:5555")
    }
}

/// The repository, from this file's path (through any symlinked checkout of the test folder).
let repositoryRoot = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath()
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
