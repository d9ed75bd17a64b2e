@testable import ClusterLaunch
import FeatStreamTestSupport
import Foundation
import XCTest

/// What `launch` hands to ssh and to the remote shell: validated, `--`-terminated, quoted by one
/// function, with private run directories. No root, no hosts: ssh is a recording stub.
final class LaunchHardeningTests: XCTestCase {
    var folder: URL!

    override func setUpWithError() throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("launch-hardening-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    override func tearDown() { try? FileManager.default.removeItem(at: folder) }

    func clusterFile(host: String = "w1", user: String = "root", options: String = "\"ServerAliveInterval=5\"", ssh: String) -> String {
        """
        [ssh]
        ssh = "\(ssh)"
        user = "\(user)"
        options = [\(options)]
        [job]
        featstream = "/bin/true"
        model = "/m"
        data = "/d"
        [keys]
        dir = "\(folder.appendingPathComponent("keys").path)"
        [coordinator]
        host = "c1"
        port = 5555
        journal = "/j/journal"
        [head]
        host = "h1"
        port = 5556
        store = "/s/store"
        [[workers]]
        host = "\(host.replacingOccurrences(of: "\"", with: "\\\""))"
        """
    }

    /// The issue's case: a host of `-oProxyCommand=touch pwned` is refused before ssh runs; nothing is created.
    func testInjectedSSHFieldsAreRefusedBeforeSSHRuns() throws {
        let ran = folder.appendingPathComponent("ssh-ran")
        let pwned = folder.appendingPathComponent("pwned")
        let stub = folder.appendingPathComponent("ssh-stub")
        try "#!/bin/sh\ntouch \(ran.path)\nexit 0\n".write(to: stub, atomically: true, encoding: .utf8)
        chmod(stub.path, 0o755)
        XCTAssertEqual(try runProcess(productsDirectory.appendingPathComponent("featstream"),
                                      ["keygen", "--keys", folder.appendingPathComponent("keys").path, "--workers", "worker1"]).status, 0)
        let cases: [(String, String)] = [
            (clusterFile(host: "-oProxyCommand=touch \(pwned.path)", ssh: stub.path), "workers.host"),
            (clusterFile(host: "w1;touch \(pwned.path)", ssh: stub.path), "workers.host"),
            (clusterFile(host: "$(touch \(pwned.path))", ssh: stub.path), "workers.host"),
            (clusterFile(host: "w1 w2", ssh: stub.path), "workers.host"),
            (clusterFile(user: "-oProxyCommand=x", ssh: stub.path), "ssh.user"),
            (clusterFile(options: "\"ProxyCommand=touch \(pwned.path)\"", ssh: stub.path), "ssh.options"),
            (clusterFile(options: "\"-oProxyCommand=x\"", ssh: stub.path), "ssh.options"),
        ]
        for (index, (text, key)) in cases.enumerated() {
            let file = folder.appendingPathComponent("cluster-\(index).toml")
            try text.write(to: file, atomically: true, encoding: .utf8)
            let result = try runProcess(productsDirectory.appendingPathComponent("featstream"), ["launch", file.path])
            XCTAssertEqual(result.status, 2, result.output)
            XCTAssertTrue(result.output.contains("\(file.path):") && result.output.contains(key), result.output)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: ran.path), "ssh ran")
        XCTAssertFalse(FileManager.default.fileExists(atPath: pwned.path), "the injected command ran")
    }

    /// A cluster file whose key folder does not exist is refused with the exact command that makes it.
    func testMissingKeyFolderIsRefusedWithTheCommandToRun() throws {
        let file = folder.appendingPathComponent("cluster.toml")
        try clusterFile(ssh: "/bin/false").write(to: file, atomically: true, encoding: .utf8)
        let result = try runProcess(productsDirectory.appendingPathComponent("featstream"), ["launch", file.path])
        XCTAssertEqual(result.status, 2, result.output)
        XCTAssertTrue(result.output.contains("featstream keygen --cluster \(file.path)"), result.output)
        // That command makes the folder: the coordinator's, the head's and one key per worker.
        let keygen = try runProcess(productsDirectory.appendingPathComponent("featstream"), ["keygen", "--cluster", file.path])
        XCTAssertEqual(keygen.status, 0, keygen.output)
        for name in ["coordinator.key", "head.key", "workers/worker1.key"] {
            var info = stat()
            XCTAssertEqual(stat(folder.appendingPathComponent("keys/\(name)").path, &info), 0, name)
            XCTAssertEqual(info.st_mode & 0o777, 0o600, name)
        }
    }

    func testSSHArgumentsEndOptionsBeforeTheDestination() throws {
        let definition = try ClusterFile.parse(text: clusterFile(ssh: "/usr/bin/ssh"), file: "t.toml", environment: [:])
        let arguments = Launcher(definition: definition).sshArguments("w1", "true")
        XCTAssertEqual(Array(arguments.suffix(3)), ["--", "w1", "true"])
        XCTAssertEqual(arguments.filter { $0 == "--" }.count, 1)
    }

    /// `shellQuote` is the one function quoting remote words: whatever the bytes, sh sees exactly them as one word.
    func testShellQuoteRoundTripsThroughSh() throws {
        let words = ["plain", "", "two words", "it's", "'", "''", "$(touch /tmp/x)", "`id`", "a;b|c&d", "-n", "*", "~root", "\\n",
                     "new\nline", "tab\there", "é ü 中", "\"quoted\"", "${HOME}", "!bang", "#hash", "a=b", "--"]
        for word in words {
            let result = try runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", "printf '%s' \(shellQuote(word))"])
            XCTAssertEqual(result.output, word, "shellQuote(\(word.debugDescription)) = \(shellQuote(word))")
        }
        let command = ["featstream", "worker", "--name", "a b", "--data", "/x/$(id)"].map(shellQuote).joined(separator: " ")
        let echoed = try runProcess(URL(fileURLWithPath: "/bin/sh"), ["-c", "for w in \(command); do printf '[%s]' \"$w\"; done"])
        XCTAssertEqual(echoed.output, "[featstream][worker][--name][a b][--data][/x/$(id)]")
    }

    /// Without `run_dir`, the remote wrapper makes a private (0700) folder with mktemp under
    /// $XDG_RUNTIME_DIR, writes the pid file there exclusively (0600), and removes both when the role ends.
    func testWrapperUsesAPrivateRunDirectory() throws {
        let definition = try ClusterFile.parse(text: clusterFile(ssh: "/usr/bin/ssh"), file: "t.toml", environment: [:])
        XCTAssertNil(definition.job.runDirectory)
        let launcher = Launcher(definition: definition)
        var role = launcher.roles[2]
        role.command = ["/bin/sleep", "30"]
        let script = launcher.wrapperCommand(role, pidFile: "test.pid")
        let runtime = folder.appendingPathComponent("runtime")
        try FileManager.default.createDirectory(at: runtime, withIntermediateDirectories: true)
        let process = Process()
        // Like sshd's session (OpenSSH closes every inherited descriptor above stderr), so the wrapper
        // sees EOF on stdin once this test closes it.
        process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        process.arguments = ["-c", "import os, sys; os.closerange(3, 65536); os.execv('/bin/sh', ['sh', '-c', sys.argv[1]])", script]
        process.environment = ["XDG_RUNTIME_DIR": runtime.path, "PATH": "/usr/bin:/bin", "HOME": folder.path]
        let input = Pipe(), errors = Pipe()
        process.standardInput = input
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        let collected = LineCollector(errors.fileHandleForReading)
        let deadline = Date().addingTimeInterval(10)
        var pidFile: String?, pid: String?
        while (pidFile == nil || pid == nil) && Date() < deadline {
            for line in collected.lines {
                if line.hasPrefix("@@featstream-launch pidfile ") { pidFile = String(line.dropFirst("@@featstream-launch pidfile ".count)) }
                if line.hasPrefix("@@featstream-launch pid ") { pid = String(line.dropFirst("@@featstream-launch pid ".count)) }
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        let path = try XCTUnwrap(pidFile, collected.lines.joined(separator: "\n"))
        XCTAssertTrue(path.hasPrefix(runtime.path + "/featstream-launch."), path)
        var info = stat()
        XCTAssertEqual(stat((path as NSString).deletingLastPathComponent, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o700)
        XCTAssertEqual(stat(path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o600)
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), pid)
        // Closing stdin is the wrapper's signal to stop the role; it cleans up after itself.
        try input.fileHandleForWriting.close()
        let exitDeadline = Date().addingTimeInterval(15)
        while process.isRunning && Date() < exitDeadline { Thread.sleep(forTimeInterval: 0.05) }
        XCTAssertFalse(process.isRunning)
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
        XCTAssertFalse(FileManager.default.fileExists(atPath: (path as NSString).deletingLastPathComponent))
    }

    func testPrivateRunDirectoryForRun() throws {
        setenv("XDG_RUNTIME_DIR", folder.path, 1)
        defer { unsetenv("XDG_RUNTIME_DIR") }
        let directory = try makePrivateRunDirectory()
        XCTAssertTrue(directory.path.hasPrefix(folder.path + "/featstream-run."), directory.path)
        var info = stat()
        XCTAssertEqual(stat(directory.path, &info), 0)
        XCTAssertEqual(info.st_mode & 0o777, 0o700)
        XCTAssertNotEqual(try makePrivateRunDirectory(), directory)
    }
}

/// Lines read from a pipe on a background thread.
final class LineCollector: @unchecked Sendable {
    private let lock = NSLock()
    private var buffer = ""

    init(_ handle: FileHandle) {
        Thread.detachNewThread { [self] in
            while true {
                let data = handle.availableData
                if data.isEmpty { return }
                lock.withLock { buffer += String(decoding: data, as: UTF8.self) }
            }
        }
    }

    var lines: [String] { lock.withLock { buffer.split(separator: "\n").map(String.init) } }
}
