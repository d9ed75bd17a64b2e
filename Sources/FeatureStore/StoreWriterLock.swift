import DurableFile
import Foundation

/// The one-writer rule of a store folder: an exclusive `flock` on `writer.lock` in the folder, held for
/// as long as this object lives (and released by the kernel if the process dies). The file records the
/// holder's pid and host, so a refused writer can say who holds it.
///
/// Why: a second writer that opened the store would truncate the last segment to what its own scan saw,
/// destroying records the first writer had appended (and acknowledged) since.
public final class StoreWriterLock {
    /// The lock file.
    public let path: String
    private let file: DurableFile

    private init(path: String, file: DurableFile) {
        self.path = path
        self.file = file
    }

    /// Takes the lock of the store folder `root` (creating the folder and the lock file if needed), or
    /// throws `FeatureStoreError.locked` naming the process that holds it.
    public static func acquire(root: URL) throws -> StoreWriterLock {
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = root.appendingPathComponent("writer.lock").path
        do {
            let file = try DurableFile.open(path, access: .readWrite, creation: .ifAbsent(mode: 0o600), noFollow: true)
            do {
                try file.lock()
            } catch DurableFileError.locked(_, let pid) {
                // The holder's own record says which host too (the kernel's pid is only meaningful here).
                var holder = [UInt8](repeating: 0, count: 256)
                let count = (try? holder.withUnsafeMutableBytes { try file.readAvailable(into: $0, at: 0) }) ?? 0
                let text = String(decoding: holder.prefix(count), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                throw FeatureStoreError.locked(path: path, holder: !text.isEmpty ? text : pid.map { "pid \($0)" } ?? "another process")
            }
            let holder = Array("pid \(getpid()) on \(ProcessInfo.processInfo.hostName)\n".utf8)
            try? file.truncate(to: 0)
            try? file.write(holder, at: 0)
            return StoreWriterLock(path: path, file: file)
        } catch let error as DurableFileError {
            throw FeatureStoreError(error)
        }
    }
}
