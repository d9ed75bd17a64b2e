import FeatStreamTestSupport
import XCTest
import Foundation
import WireProtocol
import DatasetIndex
@testable import Coordination

final class CoordinatorJournalTests: XCTestCase {
    var directory: URL!
    var path: String { directory.appendingPathComponent("coordinator.journal").path }
    let plan = ShardPlan(items: makeItems(40), shardSize: 4)

    override func setUpWithError() throws {
        directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("coordination-journal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: directory)
    }

    private func fileBytes() throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: path))) }
    private func writeFile(_ bytes: [UInt8]) throws { try Data(bytes).write(to: URL(fileURLWithPath: path)) }

    /// Writes three commits and a reservation, then "crashes" (drops the journal without any shutdown step).
    private func writeSomeHistory() throws {
        let journal = try CoordinatorJournal.open(path: path, plan: plan)
        try journal.append(shardID: 3, attempt: 5)
        try journal.reserveAttempts(through: 64)
        try journal.append(shardID: 0, attempt: 9)
        try journal.append(shardID: 7, attempt: 12)
    }

    private func vector(_ name: String) throws -> [UInt8] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocols/vectors/journal/\(name).hex")
        return try parseHex(String(contentsOf: url, encoding: .utf8))
    }

    /// The committed vectors are what the independent Python encoder writes from JOURNAL.md.
    func testVectorsAreCurrent() throws {
        let generator = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Protocols/vectors/journal/generate.py")
        let result = try runProcess(URL(fileURLWithPath: "/usr/bin/python3"), [generator.path, "--check"])
        XCTAssertEqual(result.status, 0, result.output)
    }

    /// Protocols/JOURNAL.md §5: the vector replays as documented, and the same appends write it byte for byte.
    func testVersion3VectorDecodesAndReencodes() throws {
        let bytes = try vector("journal_v3_plan_commits_reservation_poison")
        try writeFile(bytes)
        do {
            let journal = try CoordinatorJournal.open(path: path, fingerprint: 0x0123_4567_89AB_CDEF, shardCount: 10, shardSize: 4)
            XCTAssertEqual(journal.version, 3)
            XCTAssertEqual(journal.committedAttempts, [0: 9, 3: 5])
            XCTAssertEqual(journal.committed, [0, 3])
            XCTAssertEqual(journal.attemptsReservedThrough, 64)
            XCTAssertEqual(journal.poisonVerdicts, [PoisonVerdict(shardID: 6, offset: 2, losses: 3)])
            XCTAssertEqual(journal.discardedTailBytes, 0)
        }
        XCTAssertEqual(try fileBytes(), bytes, "opening an intact journal changes nothing")

        try FileManager.default.removeItem(atPath: path)
        do {
            let journal = try CoordinatorJournal.open(path: path, fingerprint: 0x0123_4567_89AB_CDEF, shardCount: 10, shardSize: 4)
            try journal.reserveAttempts(through: 64)
            try journal.append(shardID: 3, attempt: 5)
            try journal.append(PoisonVerdict(shardID: 6, offset: 2, losses: 3))
            try journal.append(shardID: 0, attempt: 9)
            try journal.append(shardID: 3, attempt: 7)
        }
        // The vector's second verdict for the same item is one a writer never appends.
        let second = try vector("journal_v3_plan_commits_reservation_poison")
        XCTAssertEqual(try fileBytes(), Array(second.prefix(second.count - 21)))
    }

    /// JOURNAL.md version 4: a plan grown while scanning replays its job id (not the one offered to a new
    /// journal), checkpoints, commits, verdict and seal; the same appends write the vector byte for byte.
    func testVersion4VectorDecodesAndReencodes() throws {
        let bytes = try vector("journal_v4_growing_plan")
        try writeFile(bytes)
        let first = ScanCheckpoint(items: 9, deadLetters: 1, recordsCRC: 0x1111_1111, keysCRC: 0x2222_2222, deadLettersCRC: 0x3333_3333)
        let second = ScanCheckpoint(items: 17, deadLetters: 2, recordsCRC: 0x4444_4444, keysCRC: 0x5555_5555, deadLettersCRC: 0x6666_6666)
        let seal = CoordinatorJournal.Seal(contentID: 0x0102_0304_0506_0708, entries: 21)
        do {
            let journal = try CoordinatorJournal.openGrowing(path: path, shardSize: 4, newJobID: 77)
            XCTAssertEqual(journal.version, 4)
            XCTAssertTrue(journal.isGrowing)
            XCTAssertEqual(journal.fingerprint, 0xFEED_FACE_CAFE_BEEF, "the job id is the journal's, not a new one")
            XCTAssertEqual(journal.checkpoints, [first, second])
            XCTAssertEqual(journal.seal, seal)
            XCTAssertEqual(journal.committedAttempts, [1: 2, 4: 7])
            XCTAssertEqual(journal.attemptsReservedThrough, 64)
            XCTAssertEqual(journal.poisonVerdicts, [PoisonVerdict(shardID: 3, offset: 1, losses: 3)])
            XCTAssertTrue(journal.mayCommit(shardID: 5))
            XCTAssertFalse(journal.mayCommit(shardID: 6), "21 entries are 6 shards of 4")
        }
        XCTAssertEqual(try fileBytes(), bytes, "opening an intact journal changes nothing")

        try FileManager.default.removeItem(atPath: path)
        do {
            let journal = try CoordinatorJournal.openGrowing(path: path, shardSize: 4, newJobID: 0xFEED_FACE_CAFE_BEEF)
            XCTAssertFalse(journal.mayCommit(shardID: 0), "a new growing plan offers nothing before its first checkpoint")
            try journal.append(first)
            try journal.reserveAttempts(through: 64)
            try journal.append(shardID: 1, attempt: 2)
            try journal.append(second)
            try journal.append(PoisonVerdict(shardID: 3, offset: 1, losses: 3))
            try journal.append(shardID: 4, attempt: 7)
            try journal.append(seal)
        }
        XCTAssertEqual(try fileBytes(), bytes)
    }

    /// A commit of a shard no checkpoint offered is damage, as is any record of a growing plan in a journal of
    /// a fixed one; a growing journal opened for a fixed plan, or the other way round, is another plan.
    func testGrowingAndFixedPlansDoNotMix() throws {
        try writeFile(try vector("journal_v4_commit_beyond_checkpoint_is_damage"))
        XCTAssertThrowsError(try CoordinatorJournal.openGrowing(path: path, shardSize: 4, newJobID: 1)) { error in
            guard case let JournalError.corrupt(_, offset, detail) = error else { return XCTFail("\(error)") }
            XCTAssertEqual(offset, 70)
            XCTAssertTrue(detail.contains("outside the plan"), detail)
        }
        try writeFile(try vector("journal_v4_growing_plan"))
        XCTAssertThrowsError(try CoordinatorJournal.open(path: path, fingerprint: 0xFEED_FACE_CAFE_BEEF, shardCount: 6, shardSize: 4)) { error in
            guard case JournalError.planMismatch = error else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try CoordinatorJournal.openGrowing(path: path, shardSize: 8, newJobID: 1)) { error in
            guard case JournalError.planMismatch = error else { return XCTFail("\(error)") }
        }
        try writeFile(try vector("journal_v3_plan_commits_reservation_poison"))
        XCTAssertThrowsError(try CoordinatorJournal.openGrowing(path: path, shardSize: 4, newJobID: 1)) { error in
            guard case let JournalError.planMismatch(_, detail) = error else { return XCTFail("\(error)") }
            XCTAssertTrue(detail.contains("fixed at start"), detail)
        }
        XCTAssertEqual(CoordinatorJournal.existingHeader(at: path)?.version, 3)
        XCTAssertEqual(CoordinatorJournal.existingHeader(at: path)?.fingerprint, 0x0123_4567_89AB_CDEF)
    }

    /// A version-2 journal (written before poison verdicts) is still read and resumed as version 2: its
    /// commits go on being appended, verdicts are not (a version-2 reader would take them for damage).
    func testVersion2JournalIsResumedAsVersion2() throws {
        let bytes = try vector("journal_v2_plan_commits_reservation")
        try writeFile(bytes)
        let journal = try CoordinatorJournal.open(path: path, fingerprint: 0x0123_4567_89AB_CDEF, shardCount: 10, shardSize: 4)
        XCTAssertEqual(journal.version, 2)
        XCTAssertEqual(journal.committedAttempts, [0: 9, 3: 5])
        XCTAssertEqual(journal.attemptsReservedThrough, 64)
        try journal.append(PoisonVerdict(shardID: 6, offset: 2, losses: 3))
        XCTAssertEqual(try fileBytes(), bytes, "no verdict in a version-2 journal")
        try journal.append(shardID: 7, attempt: 70)
        XCTAssertEqual(try fileBytes().count, bytes.count + 17)
    }

    /// A poison verdict inside a version-2 journal is damage, refused naming the record's offset.
    func testAPoisonVerdictInAVersion2JournalIsDamage() throws {
        let bytes = try vector("journal_v2_poison_is_damage")
        try writeFile(bytes)
        XCTAssertThrowsError(try CoordinatorJournal.open(path: path, fingerprint: 0x0123_4567_89AB_CDEF, shardCount: 10, shardSize: 4)) { error in
            guard case let .corrupt(_, offset, _)? = error as? JournalError else { return XCTFail("\(error)") }
            XCTAssertEqual(offset, 50)
        }
        XCTAssertEqual(try fileBytes(), bytes, "a refused journal is left untouched")
    }

    /// A version-1 journal (CRC-32 records) gets an error naming the file, both versions and what to do.
    func testOldVersionIsRefusedNamingTheFileAndTheWayOut() throws {
        let old = try vector("journal_v1_crc32")
        try writeFile(old)
        XCTAssertThrowsError(try CoordinatorJournal.open(path: path, fingerprint: 0x0123_4567_89AB_CDEF, shardCount: 10, shardSize: 4)) { error in
            XCTAssertEqual(error as? JournalError, .unsupportedVersion(path: path, version: 1))
            let text = "\(error)"
            for part in [path, "format version 1", "reads versions 2 to 4", "move the journal aside"] {
                XCTAssertTrue(text.contains(part), "\(text) lacks \(part)")
            }
        }
        XCTAssertEqual(try fileBytes(), old, "a refused journal is left untouched")
    }

    func testNewJournalIsEmptyAndReopensEmpty() throws {
        do {
            let journal = try CoordinatorJournal.open(path: path, plan: plan)
            XCTAssertEqual(journal.committed, [])
            XCTAssertEqual(journal.attemptsReservedThrough, 0)
        }
        let reopened = try CoordinatorJournal.open(path: path, plan: plan)
        XCTAssertEqual(reopened.committed, [])
        XCTAssertEqual(reopened.discardedTailBytes, 0)
    }

    func testReplayAfterCrashRestoresCommitsAndReservations() throws {
        try writeSomeHistory()
        let journal = try CoordinatorJournal.open(path: path, plan: plan)
        XCTAssertEqual(journal.committedAttempts, [3: 5, 0: 9, 7: 12])
        XCTAssertEqual(journal.attemptsReservedThrough, 64)
        XCTAssertEqual(journal.discardedTailBytes, 0)
        try journal.append(shardID: 9, attempt: 70)
        journal.close()
        let again = try CoordinatorJournal.open(path: path, plan: plan)
        XCTAssertEqual(again.committed, [0, 3, 7, 9])
        XCTAssertEqual(again.attemptsReservedThrough, 70, "a journaled commit's attempt was issued, hence reserved")
    }

    func testSecondOpenWhileLockedIsRefused() throws {
        let journal = try CoordinatorJournal.open(path: path, plan: plan)
        XCTAssertThrowsError(try CoordinatorJournal.open(path: path, plan: plan)) { error in
            XCTAssertEqual(error as? JournalError, .inUse(path: path, holderPID: getpid()))
            XCTAssertTrue("\(error)".contains("process \(getpid())"), "\(error)")
        }
        journal.close()
        XCTAssertNoThrow(try CoordinatorJournal.open(path: path, plan: plan))
    }

    func testTornFinalRecordIsTruncatedAway() throws {
        try writeSomeHistory()
        let intact = try fileBytes()
        for cut in 1...16 {
            try writeFile(Array(intact.dropLast(cut)))
            let journal = try CoordinatorJournal.open(path: path, plan: plan)
            XCTAssertEqual(journal.committedAttempts, [3: 5, 0: 9], "cut \(cut)")
            XCTAssertEqual(journal.discardedTailBytes, 17 - cut, "cut \(cut)")
            // Appending after the repair must produce a clean file.
            try journal.append(shardID: 7, attempt: 12)
            journal.close()
            XCTAssertEqual(try fileBytes(), intact, "cut \(cut)")
        }
    }

    func testZeroFilledOrGarbledFinalRecordIsTreatedAsTorn() throws {
        try writeSomeHistory()
        let intact = try fileBytes()
        try writeFile(intact + [UInt8](repeating: 0, count: 40))
        XCTAssertEqual(try CoordinatorJournal.open(path: path, plan: plan).committed, [0, 3, 7])
        XCTAssertEqual(try fileBytes(), intact)

        var garbled = intact
        garbled[garbled.count - 2] ^= 0x40
        try writeFile(garbled)
        let journal = try CoordinatorJournal.open(path: path, plan: plan)
        XCTAssertEqual(journal.committed, [0, 3])
        XCTAssertEqual(journal.discardedTailBytes, 17)
    }

    func testTornHeaderStartsOver() throws {
        do { _ = try CoordinatorJournal.open(path: path, plan: plan) }
        let header = try fileBytes()
        try writeFile(Array(header.prefix(10)))
        XCTAssertEqual(try CoordinatorJournal.open(path: path, plan: plan).committed, [])
        XCTAssertEqual(try fileBytes(), header)
    }

    func testMidFileCorruptionIsRejectedNamingTheFile() throws {
        try writeSomeHistory()
        var bytes = try fileBytes()
        let headerLength = 8 + 25
        bytes[headerLength + 8 + 2] ^= 0x01  // inside the first commit's payload
        try writeFile(bytes)
        XCTAssertThrowsError(try CoordinatorJournal.open(path: path, plan: plan)) { error in
            guard case let .corrupt(errorPath, offset, _)? = error as? JournalError else { return XCTFail("\(error)") }
            XCTAssertEqual(errorPath, path)
            XCTAssertEqual(offset, headerLength)
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
        XCTAssertEqual(try fileBytes(), bytes, "a rejected journal is left untouched")

        var badLength = try fileBytes()
        badLength[headerLength + 8 + 2] ^= 0x01
        badLength[headerLength + 1] = 0x7f  // an absurd length in the middle is not a torn tail
        try writeFile(badLength)
        XCTAssertThrowsError(try CoordinatorJournal.open(path: path, plan: plan)) { error in
            guard case .corrupt? = error as? JournalError else { return XCTFail("\(error)") }
        }
    }

    func testFingerprintMismatchIsRejectedNamingTheFile() throws {
        try writeSomeHistory()
        var changed = makeItems(40)
        changed[17].key = "replaced.jpg"
        for other in [ShardPlan(items: changed, shardSize: 4), ShardPlan(items: makeItems(40), shardSize: 5)] {
            XCTAssertThrowsError(try CoordinatorJournal.open(path: path, plan: other)) { error in
                guard case let .planMismatch(errorPath, _)? = error as? JournalError else { return XCTFail("\(error)") }
                XCTAssertEqual(errorPath, path)
                XCTAssertTrue("\(error)".contains(path), "\(error)")
            }
        }
        XCTAssertEqual(try CoordinatorJournal.open(path: path, plan: plan).committed, [0, 3, 7])
    }

    func testForeignFileIsRejected() throws {
        try writeFile(Array("this is not a journal at all, just some text\n".utf8))
        XCTAssertThrowsError(try CoordinatorJournal.open(path: path, plan: plan)) { error in
            guard case .corrupt? = error as? JournalError else { return XCTFail("\(error)") }
        }
    }
}
