import ClusterLaunch
import XCTest

/// Issue 14 §3 for `featstream launch`: the head's store width is fixed by the job's model, so every head
/// the launcher plans gets `--model`, and a cluster file that names no model for the head is refused
/// before anything starts (never a head whose first batch would choose the width). No SSH needed.
final class HeadModelTests: XCTestCase {
    /// A cluster whose workers name their own models and whose `[job]` names none; `headModel` is the
    /// `[head]` table's `model` line, if any.
    static func cluster(jobModel: String? = nil, headModel: String? = nil) -> String {
        """
        [job]
        featstream = "/opt/fs/featstream"
        data = "/d"
        \(jobModel.map { "model = \"\($0)\"" } ?? "")

        [coordinator]
        host = "c1"
        port = 5555
        journal = "/j/coordinator.journal"

        [head]
        host = "h1"
        port = 5556
        store = "/s/store"
        \(headModel.map { "model = \"\($0)\"" } ?? "")

        [keys]
        dir = "/k"

        [[workers]]
        host = "w1"
        model = "/w1/models/lite0"

        [[workers]]
        host = "w2"
        model = "/w2/models/lite0"
        """
    }

    func parse(_ text: String) throws -> ClusterDefinition {
        try ClusterFile.parse(text: text, file: "test.toml", environment: [:])
    }

    /// The head's command line as the launcher would run it.
    func headCommand(_ text: String) throws -> [String] {
        let roles = Launcher.plan(try parse(text))
        let head = try XCTUnwrap(roles.first { $0.label == "head" })
        return head.command
    }

    func modelFlag(_ command: [String]) -> String? {
        command.firstIndex(of: "--model").flatMap { command.indices.contains($0 + 1) ? command[$0 + 1] : nil }
    }

    func testAHeadWithoutAModelIsRefusedNamingTheField() throws {
        let text = Self.cluster()
        let headLine = text.components(separatedBy: "\n").firstIndex(of: "[head]")! + 1
        XCTAssertThrowsError(try parse(text)) { error in
            guard let error = error as? ClusterFileError else { return XCTFail("unexpected error \(error)") }
            XCTAssertEqual(error.key, "head.model", "\(error)")
            XCTAssertEqual(error.line, headLine, "\(error)")
            XCTAssertTrue(error.message.contains("required key is missing"), "\(error)")
            XCTAssertTrue(error.message.contains("[job]"), "the message says where to set it: \(error)")
            XCTAssertTrue(error.message.contains("feature width"), "the message says why: \(error)")
            XCTAssertTrue(error.description.hasPrefix("test.toml:\(headLine): head.model: "), error.description)
        }
    }

    func testTheJobsModelReachesTheHead() throws {
        let command = try headCommand(Self.cluster(jobModel: "/m/lite0"))
        XCTAssertEqual(modelFlag(command), "/m/lite0", command.joined(separator: " "))
        // The workers keep their own hosts' paths.
        let roles = Launcher.plan(try parse(Self.cluster(jobModel: "/m/lite0")))
        XCTAssertEqual(roles.filter { $0.label.hasPrefix("worker") }.map { modelFlag($0.command) }, ["/w1/models/lite0", "/w2/models/lite0"])
    }

    func testTheHeadsOwnModelWins() throws {
        for jobModel in [nil, "/m/lite0"] as [String?] {
            let command = try headCommand(Self.cluster(jobModel: jobModel, headModel: "/head/models/lite0"))
            XCTAssertEqual(modelFlag(command), "/head/models/lite0", command.joined(separator: " "))
        }
    }

    /// Whatever the file, a planned head has `--model` (or `--feature-dimension`): the width is never left to a batch.
    func testEveryPlannedHeadHasItsWidthFixed() throws {
        for text in [Self.cluster(jobModel: "/m"), Self.cluster(headModel: "/h"), Self.cluster(jobModel: "/m", headModel: "/h")] {
            let command = try headCommand(text)
            XCTAssertTrue(command.contains("--model") || command.contains("--feature-dimension"), command.joined(separator: " "))
        }
    }
}
