import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The one-writer rule of a store folder: an exclusive `flock` on `writer.lock` in the folder, held for
/// as long as this object lives (and released by the kernel if the process dies). The file records the
/// holder's pid and host, so a refused writer can say who holds it.
///
/// Why: a second writer that opened the store would truncate the last segment to what its own scan saw,
/// destroying records the first writer had appended (and acknowledged) since.
public final class StoreWriterLock {
    /// The lock file.
    public let path: String
    private var descriptor: Int32

    private init(path: String, descriptor: Int32) {
        self.path = path
        self.descriptor = descriptor
    }

    deinit { if descriptor >= 0 { _ = Glibc.close(descriptor) } }

    /// Takes the lock of the store folder `root` (creating the folder and the lock file if needed), or
    /// throws `FeatureStoreError.locked` naming the process that holds it.
    public static func acquire(root: URL) throws -> StoreWriterLock {
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = root.appendingPathComponent("writer.lock").path
        let descriptor = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0o600)
        guard descriptor >= 0 else { throw FeatureStoreError.io(path: path, operation: "open", errno: errno) }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let code = errno
            var holder = [UInt8](repeating: 0, count: 256)
            let count = pread(descriptor, &holder, holder.count, 0)
            _ = Glibc.close(descriptor)
            if code == EWOULDBLOCK {
                let text = count > 0 ? String(decoding: holder.prefix(count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) : ""
                throw FeatureStoreError.locked(path: path, holder: text.isEmpty ? "another process" : text)
            }
            throw FeatureStoreError.io(path: path, operation: "flock", errno: code)
        }
        let holder = Array("pid \(getpid()) on \(ProcessInfo.processInfo.hostName)\n".utf8)
        _ = ftruncate(descriptor, 0)
        _ = pwrite(descriptor, holder, holder.count, 0)
        return StoreWriterLock(path: path, descriptor: descriptor)
    }
}
