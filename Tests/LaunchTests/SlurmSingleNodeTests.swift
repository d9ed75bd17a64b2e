import FeatStreamTestSupport
import Foundation
import XCTest

/// Ops/slurm/featstream.sbatch under a real Slurm: Ops/slurm/test-single-node.sh starts munged,
/// slurmctld and slurmd on this host (private state, SLURM_CONF in a temp folder), runs a full job
/// with 2 worker tasks, then a job whose batch script gets SIGTERM half-way and its resubmission with
/// the same OUT, checking every image is stored exactly once, and stops every daemon and job it
/// started. Needs root and Debian's slurm-wlm and munge (Ops/setup.sh installs them).
final class SlurmSingleNodeTests: XCTestCase {
    static let script = repositoryRoot.appendingPathComponent("Ops/slurm/test-single-node.sh").path
    static var binary: String { productsDirectory.appendingPathComponent("featstream").path }
    static let slurmPrograms = ["/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd", "/usr/bin/sbatch",
                                "/usr/bin/scontrol", "/usr/bin/scancel", "/usr/bin/sinfo", "/usr/bin/squeue"]

    override func setUpWithError() throws {
        guard getuid() == 0 else { throw XCTSkip("SlurmSingleNodeTests need root (slurmctld and slurmd run as SlurmUser=root)") }
        let missing = Self.slurmPrograms.filter { !FileManager.default.isExecutableFile(atPath: $0) }
        if !missing.isEmpty {
            let reason = "slurm-wlm/munge not installed (no \(missing.joined(separator: ", "))); run Ops/setup.sh"
            // CI runs Ops/setup.sh first, so there a missing Slurm is a setup bug, not a reason to skip.
            if ProcessInfo.processInfo.environment["CI"] == "true" { throw SlurmMissing(description: reason) }
            throw XCTSkip(reason)
        }
        XCTAssertTrue(FileManager.default.isExecutableFile(atPath: Self.binary), "no featstream binary at \(Self.binary)")
    }

    /// A full job, a job stopped by SIGTERM to its batch script, and its resumption: each store holds
    /// every image exactly once, and nothing the script started is left running.
    func testBatchScriptOnSingleNodeSlurm() throws {
        let started = Date()
        // timeout(1) bounds the whole run; its SIGTERM makes the script tear down what it started.
        let run = try runProcess(URL(fileURLWithPath: "/usr/bin/env"),
                                 ["FEATSTREAM=\(Self.binary)", "timeout", "--kill-after=90", "300", "bash", Self.script])
        let text = run.output
        print("test-single-node.sh took \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        XCTAssertEqual(run.status, 0, text)
        XCTAssertTrue(text.contains("slurm-test: PASS"), text)
        XCTAssertNotNil(text.range(of: "node \\S+ idle after [0-9]+ s", options: .regularExpression), text)
        XCTAssertNotNil(text.range(of: "job [0-9]+: complete in [0-9]+ s \\(2 worker tasks joined, head trained\\)",
                                   options: .regularExpression), text)
        XCTAssertTrue(text.contains("exactly once: 192 rows, indexes 0..191 each once, no dead letters"), text)
        XCTAssertNotNil(text.range(of: "stopped by SIGTERM \\(FAILED, exit code 143:0\\)", options: .regularExpression), text)
        XCTAssertNotNil(text.range(of: "resumed with [0-9]+/24 shards already stored and completed",
                                   options: .regularExpression), text)
        XCTAssertTrue(text.contains("exactly once: 384 rows, indexes 0..383 each once, no dead letters"), text)

        // Every daemon and job process names the script's state folder on its command line.
        let state = try XCTUnwrap(text.range(of: "/tmp/featstream-slurm\\.[A-Za-z0-9]+", options: .regularExpression)
            .map { String(text[$0]) }, text)
        XCTAssertEqual(processes(mentioning: state), [], "processes left behind by test-single-node.sh")
        XCTAssertFalse(FileManager.default.fileExists(atPath: state), "\(state) left behind after a passing run")
    }

    struct SlurmMissing: Error, CustomStringConvertible { let description: String }

    /// "pid command" of every process whose command line contains `fragment`.
    func processes(mentioning fragment: String) -> [String] {
        let own = ProcessInfo.processInfo.processIdentifier
        let pids = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap(Int32.init) ?? []
        return pids.filter { $0 != own }.compactMap { pid in
            guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            let command = String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            return command.contains(fragment) ? "\(pid) \(command)" : nil
        }
    }
}
