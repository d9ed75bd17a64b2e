import Glibc

/// Why a file operation failed; every case names the file.
public enum DurableFileError: Error, Equatable, CustomStringConvertible {
    /// A system call failed with `errno`.
    case io(path: String, operation: String, errno: Int32)
    /// The file ended at `offset + read` while `wanted` bytes were asked for from `offset`.
    case endOfFile(path: String, offset: Int, wanted: Int, read: Int)
    /// Another open file description holds the lock; `holderPID` is the process that holds it, when the
    /// kernel says (`/proc/locks`; nil elsewhere, or when the holder is in another pid namespace).
    case locked(path: String, holderPID: Int32?)

    /// One line naming the file and the problem.
    public var description: String {
        switch self {
        case let .io(path, operation, code):
            "\(path): \(operation) failed: \(String(cString: strerror(code))) (errno \(code))"
        case let .endOfFile(path, offset, wanted, read):
            "\(path): the file ends \(read) bytes into the \(wanted) bytes wanted at byte \(offset)"
        case let .locked(path, pid):
            "\(path): locked by " + (pid.map { "process \($0)" } ?? "another process")
        }
    }
}

/// An open file whose reads and writes are exact and whose syncs are explicit: the one home of the
/// POSIX I/O that FeatureStream's durable files (coordinator journal, feature store, key files, dataset
/// index) rely on.
///
/// Promises: `read` returns exactly the bytes asked for or throws (`endOfFile` when the file is shorter);
/// `write` writes every byte or throws; both retry `EINTR` and short counts (`readNext`, for streams,
/// retries `EINTR` and returns what one read gave). `sync` returns once the file's data and size
/// survive power loss; a file's *name* survives only once its directory is synced too
/// (`syncParentDirectory`), which `open(..., creation:)` callers do after creating a file. The descriptor
/// is close-on-exec and closed when the object goes away.
public final class DurableFile {
    /// How `open` treats a file that does or does not exist.
    public enum Creation: Equatable, Sendable {
        /// The file must exist.
        case existing
        /// The file must not exist (`O_EXCL`); it is created with `mode` (narrowed by the umask).
        case exclusive(mode: mode_t)
        /// Created with `mode` when absent (`created` says which happened), opened otherwise.
        case ifAbsent(mode: mode_t)
        /// Created with `mode` when absent, emptied otherwise (`O_TRUNC`): scratch files rebuilt from scratch.
        case truncating(mode: mode_t)
    }

    /// How the file is opened.
    public enum Access: Sendable {
        case readOnly, writeOnly, readWrite

        var flags: Int32 {
            switch self {
            case .readOnly: O_RDONLY
            case .writeOnly: O_WRONLY
            case .readWrite: O_RDWR
            }
        }
    }

    /// The file's path, as opened.
    public let path: String
    /// The open descriptor; -1 once closed.
    public private(set) var descriptor: Int32
    /// Whether `open` created the file.
    public let created: Bool
    let calls: SystemCalls

    init(path: String, descriptor: Int32, created: Bool, calls: SystemCalls) {
        self.path = path
        self.descriptor = descriptor
        self.created = created
        self.calls = calls
    }

    deinit { close() }

    /// Opens `path`. `noFollow` refuses a symbolic link in the last component (for files that must never
    /// be written through a planted link, such as secret keys and lock files).
    public static func open(_ path: String, access: Access, creation: Creation = .existing,
                            noFollow: Bool = false) throws -> DurableFile {
        try open(path, access: access, creation: creation, noFollow: noFollow, calls: .posix)
    }

    static func open(_ path: String, access: Access, creation: Creation, noFollow: Bool,
                     calls: SystemCalls) throws -> DurableFile {
        let flags = access.flags | O_CLOEXEC | (noFollow ? O_NOFOLLOW : 0)
        var created = false
        var descriptor: Int32
        switch creation {
        case .existing:
            descriptor = systemOpen(path, flags, 0)
        case let .exclusive(mode):
            descriptor = systemOpen(path, flags | O_CREAT | O_EXCL, mode)
            created = descriptor >= 0
        case let .ifAbsent(mode):
            descriptor = systemOpen(path, flags | O_CREAT | O_EXCL, mode)
            created = descriptor >= 0
            if descriptor < 0 && errno == EEXIST { descriptor = systemOpen(path, flags, 0) }
        case let .truncating(mode):
            descriptor = systemOpen(path, flags | O_CREAT | O_TRUNC, mode)
        }
        guard descriptor >= 0 else {
            throw DurableFileError.io(path: path, operation: creation == .existing ? "open" : "create", errno: errno)
        }
        return DurableFile(path: path, descriptor: descriptor, created: created, calls: calls)
    }

    /// A second descriptor of the same open file (`dup`), for another thread to sync or read through
    /// while this one goes on; it shares the file offset and locks, and closes on its own.
    public func duplicate() throws -> DurableFile {
        let copy = dup(descriptor)
        guard copy >= 0 else { throw failure("dup") }
        return DurableFile(path: path, descriptor: copy, created: false, calls: calls)
    }

    /// Closes the descriptor. A lock taken through it is released once its `duplicate`s are closed too
    /// (they share it). Safe to call more than once.
    public func close() {
        if descriptor >= 0 {
            _ = systemClose(descriptor)
            descriptor = -1
        }
    }

    private func failure(_ operation: String, _ code: Int32 = errno) -> DurableFileError {
        .io(path: path, operation: operation, errno: code)
    }

    // MARK: reading

    /// Exactly `count` bytes from `offset`; a file that ends sooner throws `endOfFile`.
    public func read(count: Int, at offset: Int) throws -> [UInt8] {
        var read = 0
        // Uninitialised: on the image-reading hot path zero-filling every buffer first costs a second pass.
        let bytes = try [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            read = try readAvailable(into: UnsafeMutableRawBufferPointer(buffer), at: offset)
            initialized = read
        }
        guard read == count else { throw DurableFileError.endOfFile(path: path, offset: offset, wanted: count, read: read) }
        return bytes
    }

    /// Fills `buffer` from `offset` until it is full or the file ends; returns the bytes read.
    public func readAvailable(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws -> Int {
        try transfer(buffer.count, operation: "read") { done in
            calls.pread(descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset + done))
        }
    }

    /// Up to `buffer.count` bytes from the file's current position, which it advances: one `read`, retried
    /// on `EINTR`; 0 only at the end of the file (or for an empty buffer). For pipes and other streams
    /// (`pread` fails on them), where a reader takes what has arrived instead of waiting for a full buffer.
    public func readNext(into buffer: UnsafeMutableRawBufferPointer) throws -> Int {
        guard let base = buffer.baseAddress, buffer.count > 0 else { return 0 }
        while true {
            let result = calls.read(descriptor, base, buffer.count)
            if result >= 0 { return result }
            if errno != EINTR { throw failure("read") }
        }
    }

    /// Repeats `step(bytesDoneSoFar)` (a `pread` or `pwrite` of the rest) until `count` bytes are done or it
    /// returns 0, retrying `EINTR` and short counts; returns the bytes done.
    private func transfer(_ count: Int, operation: String, _ step: (Int) -> Int) throws -> Int {
        var done = 0
        while done < count {
            let result = step(done)
            if result < 0 {
                if errno == EINTR { continue }
                throw failure(operation)
            }
            if result == 0 { break }
            done += result
        }
        return done
    }

    /// The whole file, from byte 0 to its end.
    public func readAll() throws -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = try chunk.withUnsafeMutableBytes { try readAvailable(into: $0, at: bytes.count) }
            bytes += chunk[0..<count]
            if count < chunk.count { return bytes }
        }
    }

    // MARK: writing

    /// Writes every byte of `bytes` at `offset`.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws {
        let written = try transfer(bytes.count, operation: "write") { done in
            calls.pwrite(descriptor, bytes.baseAddress! + done, bytes.count - done, off_t(offset + done))
        }
        // pwrite never returns 0 for a non-empty write on a regular file; if it does, nothing more will go.
        guard written == bytes.count else { throw failure("write", EIO) }
    }

    /// Writes every byte of `bytes` at `offset`.
    public func write(_ bytes: [UInt8], at offset: Int) throws {
        try bytes.withUnsafeBytes { try write($0, at: offset) }
    }

    /// Writes `pieces` one after another from `offset`.
    public func write(_ pieces: [[UInt8]], at offset: Int) throws {
        var position = offset
        for piece in pieces {
            try write(piece, at: position)
            position += piece.count
        }
    }

    /// Cuts (or extends with zeros) the file to `length` bytes.
    public func truncate(to length: Int) throws {
        guard ftruncate(descriptor, off_t(length)) == 0 else { throw failure("truncate") }
    }

    /// Sets the permission bits exactly (not narrowed by the umask, unlike creation).
    public func setMode(_ mode: mode_t) throws {
        guard fchmod(descriptor, mode) == 0 else { throw failure("chmod") }
    }

    // MARK: durability

    /// Returns once the file's data and metadata are on disk (`fsync`). After a failure the kernel may
    /// have dropped the dirty pages, so callers must treat what is on disk as unknown.
    public func sync() throws {
        guard calls.fsync(descriptor) == 0 else { throw failure("fsync") }
    }

    /// Returns once the file's data, and the size when it changed, are on disk (`fdatasync`).
    public func syncData() throws {
        guard calls.fdatasync(descriptor) == 0 else { throw failure("fdatasync") }
    }

    /// Asks the kernel to drop the file's clean cached pages (dirty ones stay until written). Advice
    /// only: nothing fails if the kernel ignores it.
    public func dropCachedPages() {
        _ = posix_fadvise(descriptor, 0, 0, POSIX_FADV_DONTNEED)
    }

    /// Makes the entry of `path` in its directory durable (the file's own `sync` does not).
    public static func syncParentDirectory(of path: String) throws {
        try syncParentDirectory(of: path, calls: .posix)
    }

    static func syncParentDirectory(of path: String, calls: SystemCalls) throws {
        try syncDirectory(parentDirectory(of: path), calls: calls)
    }

    /// Makes the entries of `directory` durable (created, renamed and removed names).
    public static func syncDirectory(_ directory: String) throws {
        try syncDirectory(directory, calls: .posix)
    }

    static func syncDirectory(_ directory: String, calls: SystemCalls) throws {
        let descriptor = systemOpen(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0)
        guard descriptor >= 0 else { throw DurableFileError.io(path: directory, operation: "open directory", errno: errno) }
        defer { _ = systemClose(descriptor) }
        guard calls.fsync(descriptor) == 0 else {
            throw DurableFileError.io(path: directory, operation: "fsync directory", errno: errno)
        }
    }

    /// The directory holding `path` ("." for a bare name).
    public static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let parent = String(path[..<slash])
        return parent.isEmpty ? "/" : parent
    }

    /// Creates `path` (which must not exist, and is never followed if a link) holding `bytes` and syncs
    /// it. Created with `mode` narrowed by the umask; `exactMode` sets `mode` exactly before any byte is
    /// written (for secret keys, whose owner must be able to read them whatever the umask). The caller
    /// publishes the file (`rename`/`link`) and syncs the directory. On failure the file is removed.
    public static func createSynced(_ path: String, bytes: UnsafeRawBufferPointer, mode: mode_t, exactMode: Bool = false) throws {
        let file = try open(path, access: .writeOnly, creation: .exclusive(mode: mode), noFollow: true)
        do {
            if exactMode { try file.setMode(mode) }
            try file.write(bytes, at: 0)
            try file.sync()
        } catch {
            file.close()
            _ = unlink(path)
            throw error
        }
    }

    /// Renames `source` to `destination`, replacing it; sync the directory to make it durable.
    public static func rename(_ source: String, to destination: String) throws {
        guard Glibc.rename(source, destination) == 0 else {
            throw DurableFileError.io(path: destination, operation: "rename from \(source)", errno: errno)
        }
    }

    // MARK: size and locks

    /// The file's `stat`, from the open descriptor (so the file checked is the file read).
    public func status() throws -> stat {
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw failure("stat") }
        return status
    }

    /// The file's size in bytes.
    public func size() throws -> Int { Int(try status().st_size) }

    /// Takes an exclusive `flock` without waiting, held until `close` (or process exit). A lock held by
    /// another open file description, in this process or another, throws `locked` naming its holder.
    public func lock() throws {
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            guard code == EWOULDBLOCK else { throw failure("flock", code) }
            throw DurableFileError.locked(path: path, holderPID: try? lockHolder())
        }
    }

    /// The pid holding a `flock` on this file, from `/proc/locks` (`N: FLOCK ADVISORY WRITE pid maj:min:inode …`).
    func lockHolder() throws -> Int32? {
        let status = try status()
        let device = UInt64(status.st_dev)
        let major = ((device >> 8) & 0xfff) | ((device >> 32) & ~0xfff)
        let minor = (device & 0xff) | ((device >> 12) & ~0xff)
        let identity = String(major, radix: 16) + ":" + String(minor, radix: 16) + ":" + String(status.st_ino)
        let locks = try DurableFile.open("/proc/locks", access: .readOnly)
        let text = String(decoding: try locks.readAll(), as: UTF8.self)
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: " ")
            // Waiters are listed as "N: -> FLOCK ..."; only the holder counts.
            guard fields.count >= 6, fields[1] == "FLOCK", let pid = Int32(fields[4]) else { continue }
            let parts = fields[5].split(separator: ":")
            guard parts.count == 3, let fileMajor = UInt64(parts[0], radix: 16), let fileMinor = UInt64(parts[1], radix: 16)
            else { continue }
            let normalized = String(fileMajor, radix: 16) + ":" + String(fileMinor, radix: 16) + ":" + parts[2]
            if normalized == identity { return pid }
        }
        return nil
    }
}

/// The system calls whose short counts and interruptions `DurableFile` handles; tests substitute them.
struct SystemCalls: Sendable {
    var read: @Sendable (Int32, UnsafeMutableRawPointer, Int) -> Int
    var pread: @Sendable (Int32, UnsafeMutableRawPointer, Int, off_t) -> Int
    var pwrite: @Sendable (Int32, UnsafeRawPointer, Int, off_t) -> Int
    var fsync: @Sendable (Int32) -> Int32
    var fdatasync: @Sendable (Int32) -> Int32

    static let posix = SystemCalls(read: { Glibc.read($0, $1, $2) }, pread: { Glibc.pread($0, $1, $2, $3) },
                                   pwrite: { Glibc.pwrite($0, $1, $2, $3) },
                                   fsync: { Glibc.fsync($0) }, fdatasync: { Glibc.fdatasync($0) })
}

/// The C `open` and `close`, out of reach of `DurableFile.open` and `close` inside the class.
private func systemOpen(_ path: String, _ flags: Int32, _ mode: mode_t) -> Int32 { Glibc.open(path, flags, mode) }
private func systemClose(_ descriptor: Int32) -> Int32 { Glibc.close(descriptor) }
