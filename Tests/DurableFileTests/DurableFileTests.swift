import Foundation
import Glibc
import XCTest
@testable import DurableFile

final class DurableFileTests: XCTestCase {
    var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "durable-file-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// System calls that move at most `limit` bytes per call and fail every other call with EINTR, as a
    /// signal-heavy process on a pipe-like file system would see them.
    private func stingyCalls(limit: Int) -> SystemCalls {
        let interrupt = Toggle()
        var calls = SystemCalls.posix
        calls.pwrite = { fd, bytes, count, offset in
            if interrupt.flip() { errno = EINTR; return -1 }
            return Glibc.pwrite(fd, bytes, min(count, limit), offset)
        }
        calls.pread = { fd, bytes, count, offset in
            if interrupt.flip() { errno = EINTR; return -1 }
            return Glibc.pread(fd, bytes, min(count, limit), offset)
        }
        return calls
    }

    func testShortAndInterruptedWritesAndReadsMoveEveryByte() throws {
        let path = directory + "/data"
        let file = try DurableFile.open(path, access: .readWrite, creation: .exclusive(mode: 0o600), noFollow: false,
                                        calls: stingyCalls(limit: 3))
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        try file.write([Array(bytes[..<10]), Array(bytes[10...])], at: 0)
        XCTAssertEqual(Array(try Data(contentsOf: URL(fileURLWithPath: path))), bytes)
        XCTAssertEqual(try file.read(count: 500, at: 250), Array(bytes[250..<750]))
        XCTAssertEqual(try file.readAll(), bytes)
        XCTAssertThrowsError(try file.read(count: 20, at: 990)) { error in
            XCTAssertEqual(error as? DurableFileError, .endOfFile(path: path, offset: 990, wanted: 20, read: 10))
        }
    }

    /// `readNext` hands back what one read gave, retrying interruptions: a pipe's reader gets the bytes that
    /// have arrived without waiting for a full buffer, and 0 once no writer is left.
    func testReadNextTakesWhatAPipeHasAndRetriesInterruptions() throws {
        let path = directory + "/pipe"
        XCTAssertEqual(mkfifo(path, 0o600), 0)
        // Opened read-write, the writer's end waits for no reader (Linux), and then the reader's open waits for no writer.
        let writer = Glibc.open(path, O_RDWR | O_CLOEXEC)
        XCTAssertGreaterThanOrEqual(writer, 0)
        let interrupt = Toggle()
        var calls = SystemCalls.posix
        calls.read = { fd, bytes, count in
            if interrupt.flip() { errno = EINTR; return -1 }
            return Glibc.read(fd, bytes, count)
        }
        let file = try DurableFile.open(path, access: .readOnly, creation: .existing, noFollow: false, calls: calls)
        var buffer = [UInt8](repeating: 0, count: 64)
        XCTAssertEqual(Glibc.write(writer, [1, 2, 3, 4, 5] as [UInt8], 5), 5)
        let arrived = try buffer.withUnsafeMutableBytes { try file.readNext(into: $0) }
        XCTAssertEqual(arrived, 5)
        XCTAssertEqual(Array(buffer[..<5]), [1, 2, 3, 4, 5])
        XCTAssertEqual(Glibc.close(writer), 0)
        let atEnd = try buffer.withUnsafeMutableBytes { try file.readNext(into: $0) }
        XCTAssertEqual(atEnd, 0)
    }

    func testAFailedWriteNamesTheFileAndTheCall() throws {
        let path = directory + "/full"
        var calls = SystemCalls.posix
        calls.pwrite = { _, _, _, _ in errno = ENOSPC; return -1 }
        let file = try DurableFile.open(path, access: .writeOnly, creation: .exclusive(mode: 0o644), noFollow: false, calls: calls)
        XCTAssertThrowsError(try file.write([1, 2, 3], at: 0)) { error in
            XCTAssertEqual(error as? DurableFileError, .io(path: path, operation: "write", errno: ENOSPC))
            XCTAssertTrue("\(error)".contains(path), "\(error)")
        }
    }

    /// `createSynced` syncs the file itself, and `syncParentDirectory` the directory holding its name.
    func testSyncReachesTheFileAndItsParentDirectory() throws {
        let synced = Recorder()
        var calls = SystemCalls.posix
        calls.fsync = { fd in
            synced.append(descriptorPath(fd))
            return Glibc.fsync(fd)
        }
        let path = directory + "/manifest"
        let file = try DurableFile.open(path, access: .writeOnly, creation: .exclusive(mode: 0o644), noFollow: true, calls: calls)
        try file.write(Array("hello".utf8), at: 0)
        try file.sync()
        try DurableFile.syncParentDirectory(of: path, calls: calls)
        let real = URL(fileURLWithPath: path).resolvingSymlinksInPath().path
        XCTAssertEqual(synced.values, [real, (real as NSString).deletingLastPathComponent])

        var failing = SystemCalls.posix
        failing.fsync = { _ in errno = EIO; return -1 }
        XCTAssertThrowsError(try DurableFile.syncParentDirectory(of: path, calls: failing)) { error in
            XCTAssertEqual(error as? DurableFileError, .io(path: directory, operation: "fsync directory", errno: EIO))
        }
    }

    func testCreateSyncedHonoursTheUmaskUnlessTheModeMustBeExact() throws {
        let path = directory + "/secret"
        let old = umask(0o077)
        defer { umask(old) }
        func mode(_ path: String) -> mode_t {
            var info = stat()
            XCTAssertEqual(stat(path, &info), 0)
            return info.st_mode & 0o777
        }
        try [UInt8]("public\n".utf8).withUnsafeBytes { try DurableFile.createSynced(directory + "/narrowed", bytes: $0, mode: 0o644) }
        XCTAssertEqual(mode(directory + "/narrowed"), 0o600)
        try [UInt8]("key\n".utf8).withUnsafeBytes { try DurableFile.createSynced(path, bytes: $0, mode: 0o640, exactMode: true) }
        XCTAssertEqual(mode(path), 0o640)
        XCTAssertThrowsError(try [UInt8]("other\n".utf8).withUnsafeBytes { try DurableFile.createSynced(path, bytes: $0, mode: 0o600) }) {
            XCTAssertEqual($0 as? DurableFileError, .io(path: path, operation: "create", errno: EEXIST))
        }
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "key\n", "an existing file is never replaced")

        let link = directory + "/planted"
        XCTAssertEqual(symlink(directory + "/elsewhere", link), 0)
        XCTAssertThrowsError(try DurableFile.open(link, access: .readWrite, creation: .ifAbsent(mode: 0o600), noFollow: true))
        XCTAssertFalse(FileManager.default.fileExists(atPath: directory + "/elsewhere"), "never written through a link")
    }

    func testALockHeldElsewhereIsRefusedNamingTheHolder() throws {
        let path = directory + "/lock"
        let holder = try DurableFile.open(path, access: .readWrite, creation: .ifAbsent(mode: 0o600))
        XCTAssertTrue(holder.created)
        try holder.lock()
        // flock belongs to the open file description: a second open, even in this process, is refused.
        let second = try DurableFile.open(path, access: .readWrite, creation: .ifAbsent(mode: 0o600))
        XCTAssertFalse(second.created)
        XCTAssertThrowsError(try second.lock()) { error in
            XCTAssertEqual(error as? DurableFileError, .locked(path: path, holderPID: getpid()))
            XCTAssertTrue("\(error)".contains("process \(getpid())"), "\(error)")
        }
        holder.close()
        XCTAssertNoThrow(try second.lock())
    }

    func testParentDirectory() {
        XCTAssertEqual(DurableFile.parentDirectory(of: "/a/b/c"), "/a/b")
        XCTAssertEqual(DurableFile.parentDirectory(of: "/c"), "/")
        XCTAssertEqual(DurableFile.parentDirectory(of: "c"), ".")
    }
}

private func descriptorPath(_ fd: Int32) -> String {
    (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)")) ?? "fd \(fd)"
}

private final class Toggle: @unchecked Sendable {
    private var state = false
    func flip() -> Bool {
        state.toggle()
        return state
    }
}

private final class Recorder: @unchecked Sendable {
    private(set) var values: [String] = []
    func append(_ value: String) { values.append(value) }
}
