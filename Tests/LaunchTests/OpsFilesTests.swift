import ClusterLaunch
import FeatStreamTestSupport
import Foundation
import Transport
import XCTest

/// The hand-written deployment files (Kubernetes, systemd, Slurm) start roles with flags the typed
/// `RoleCommand` builder knows, always with `--keys`, and mount secret keys with modes the key loader accepts.
final class OpsFilesTests: XCTestCase {
    /// `--flag` tokens in `text` (`--flag=value` counts as `--flag`).
    func flags(_ text: String) -> [String] {
        text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" || $0 == "'" || $0 == "\"" })
            .filter { $0.hasPrefix("--") && $0.count > 2 }
            .map { String($0.split(separator: "=", maxSplits: 1)[0]) }
    }

    func check(_ subcommand: String, _ used: [String], where place: String, file: StaticString = #filePath, line: UInt = #line) {
        let known = RoleCommand.flags(of: subcommand)
        XCTAssertFalse(known.isEmpty, "\(place): unknown role \(subcommand)", file: file, line: line)
        for flag in used { XCTAssertTrue(known.contains(flag), "\(place): \(subcommand) has no flag \(flag)", file: file, line: line) }
        XCTAssertTrue(used.contains("--keys"), "\(place): \(subcommand) starts without --keys", file: file, line: line)
        XCTAssertFalse(used.contains("--insecure-plaintext"), "\(place): plaintext in a deployment file", file: file, line: line)
    }

    func testKubernetesManifestsMatchTheBuilderAndTheKeyLoader() throws {
        let result = try runProcess(URL(fileURLWithPath: "/usr/bin/env"),
                                    ["python3", repositoryRoot.appendingPathComponent("Ops/k8s/validate.py").path, "--json"])
        XCTAssertEqual(result.status, 0, result.output)
        let line = try XCTUnwrap(result.output.split(separator: "\n").first { $0.hasPrefix("JSON ") }, result.output)
        struct Container: Decodable {
            var file: String, container: String, `init`: Bool, args: [String]
            var secretModes: [Mode]
            struct Mode: Decodable { var volume: String, mode: Int }
        }
        let containers = try JSONDecoder().decode([Container].self, from: Data(line.dropFirst(5).utf8))
        let roles = containers.filter { !$0.`init` }
        XCTAssertEqual(Set(roles.map { $0.args.first ?? "" }), ["coordinator", "head", "worker"])
        for container in roles {
            check(container.args[0], flags(container.args.dropFirst().joined(separator: " ")), where: "\(container.file) \(container.container)")
        }
        for container in containers {
            XCTAssertFalse(container.secretModes.isEmpty, "\(container.file): no key Secret mounted")
            for mode in container.secretModes {
                XCTAssertTrue(CurveKeyPair.acceptsSecretKeyMode(mode_t(mode.mode)),
                              "\(container.file) volume \(mode.volume): mode 0\(String(mode.mode, radix: 8)) would be refused by the key loader")
            }
        }
        // The init container installs the keys with a private umask.
        for container in containers where container.`init` {
            XCTAssertTrue(container.args.joined(separator: " ").contains("umask 077"), container.file)
        }
    }

    /// Every manifest against the Kubernetes API schemas, offline and strict (unknown fields refused):
    /// kubernetes-validate, a pinned PyPI package from Ops/setup.sh.
    func testKubernetesManifestsPassTheAPISchemas() throws {
        let manifests = try FileManager.default.contentsOfDirectory(atPath: repositoryRoot.appendingPathComponent("Ops/k8s").path)
            .filter { $0.hasSuffix(".yaml") }.sorted().map { repositoryRoot.appendingPathComponent("Ops/k8s/\($0)").path }
        XCTAssertFalse(manifests.isEmpty)
        let result = try runProcess(URL(fileURLWithPath: "/usr/bin/env"),
                                    ["python3", "-m", "kubernetes_validate", "--strict", "--quiet", "-k", "1.30.0"] + manifests)
        XCTAssertEqual(result.status, 0, "kubernetes-validate (pip install kubernetes-validate==1.37.0, see Ops/setup.sh):\n\(result.output)")
    }

    func testSystemdUnitsMatchTheBuilder() throws {
        for (unit, role) in [("featstream-coordinator.service", "coordinator"), ("featstream-head.service", "head"),
                             ("featstream-worker@.service", "worker")] {
            let text = try String(contentsOf: repositoryRoot.appendingPathComponent("Ops/systemd/\(unit)"), encoding: .utf8)
            var command = ""
            var inExec = false
            for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
                if line.hasPrefix("ExecStart=") { inExec = true }
                guard inExec else { continue }
                command += " " + line
                if !line.hasSuffix("\\") { break }
            }
            let words = command.split(separator: " ")
            XCTAssertEqual(words.dropFirst().first.map(String.init), role, unit)
            check(role, flags(command), where: unit)
        }
    }

    func testSlurmScriptMatchesTheBuilder() throws {
        let text = try String(contentsOf: repositoryRoot.appendingPathComponent("Ops/slurm/featstream.sbatch"), encoding: .utf8)
        let lines = text.components(separatedBy: "\n")
        for (role, start) in [("coordinator", "\"$FEATSTREAM\" coordinator"), ("head", "\"$FEATSTREAM\" head"), ("worker", "exec \"$0\" worker")] {
            let srun = try XCTUnwrap(lines.firstIndex { $0.hasPrefix("srun --job-name=featstream-\(role)") }, role)
            var block = ""
            for line in lines[srun...] {
                block += " " + line
                if !line.hasSuffix("\\") { break }
            }
            let range = try XCTUnwrap(block.range(of: start), "\(role): no \(start)")
            check(role, flags(String(block[range.upperBound...])), where: "featstream.sbatch \(role)")
        }
    }

    /// `launch --dry-run` prints exactly the builder's command lines.
    func testDryRunPrintsTheBuilderCommands() throws {
        let file = repositoryRoot.appendingPathComponent("Cluster/example.toml").path
        let result = try runProcess(productsDirectory.appendingPathComponent("featstream"), ["launch", "--dry-run", file])
        XCTAssertEqual(result.status, 0, result.output)
        let plan = Launcher.plan(try ClusterFile.parse(path: file))
        for role in plan { XCTAssertTrue(result.output.contains("\(role.host) \(role.label): \(role.command.joined(separator: " "))"), result.output) }
        for line in result.output.split(separator: "\n") where line.contains(": ") {
            let words = line.split(separator: " ")
            if words.count > 3 { check(String(words[3]), flags(String(line)), where: "dry-run") }
        }
    }
}
