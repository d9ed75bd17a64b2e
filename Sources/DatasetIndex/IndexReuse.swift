import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One difference between the dataset an index was built from and the dataset on disk now.
public struct DatasetChange: Sendable, Equatable, CustomStringConvertible {
    /// Path relative to the index root (`.` for the root).
    public var path: String
    /// A sentence saying what differs.
    public var what: String

    /// A change with the given fields.
    public init(path: String, what: String) {
        self.path = path
        self.what = what
    }

    /// `<path>: <what>`.
    public var description: String { "\(path): \(what)" }
}

extension IndexedDataset {
    /// Re-checks the dataset fingerprint (Protocols/INDEX.md §5) against the files on disk: every fingerprinted
    /// directory's mtime (files added, removed or renamed), every manifest and tar's size, mtime and sampled
    /// hash, and the sampled item files. Empty when nothing changed. Cost: one `stat` per directory and tar,
    /// two 4 KiB reads per tar, sixteen per manifest and sampled file; never a rescan.
    public func datasetChanges() throws -> [DatasetChange] {
        var changes: [DatasetChange] = []
        for entry in try fingerprintEntries() {
            let full = entry.path == "." ? root : resolve(entry.path)
            var info = stat()
            guard stat(full, &info) == 0 else {
                changes.append(DatasetChange(path: entry.path, what: errno == ENOENT ? "was removed" : "cannot be read: \(errnoText())"))
                continue
            }
            switch entry.kind {
            case .directory:
                if mtimeNs(info) != entry.mtimeNs {
                    changes.append(DatasetChange(path: entry.path, what: "directory was modified (entries added, removed or renamed)"))
                }
            case .manifest, .tar, .sampledFile:
                guard let now = fileState(full, blocks: entry.kind == .tar ? 2 : 16) else {
                    changes.append(DatasetChange(path: entry.path, what: "is no longer a readable regular file"))
                    continue
                }
                if now.size != entry.size {
                    changes.append(DatasetChange(path: entry.path, what: "size changed from \(entry.size) to \(now.size) bytes"))
                } else if now.mtimeNs != entry.mtimeNs {
                    changes.append(DatasetChange(path: entry.path, what: "was modified (mtime changed)"))
                } else if now.hash != entry.sampleHash {
                    changes.append(DatasetChange(path: entry.path, what: "content changed (sampled hash differs, mtime kept)"))
                }
            }
        }
        return changes
    }
}

/// What a restarted coordinator finds at its index path (`IndexReuse.check`).
public enum IndexReuse: Sendable {
    /// The index was built for this selection and the dataset has not changed: use it, no rescan.
    case reusable(IndexedDataset)
    /// The index matches the selection but the dataset changed: a job that already leased shards of it must
    /// not continue (its positions may now name other files); report `changes`.
    case datasetChanged(IndexedDataset, [DatasetChange])
    /// No usable index (`reason` says why: missing, unreadable, another selection): scan.
    case absent(reason: String)

    /// Opens the index at `indexPath` and compares it with `selection` and the dataset on disk.
    public static func check(indexPath: String, selection: IndexSelection) -> IndexReuse {
        guard FileManager.default.fileExists(atPath: indexPath) else { return .absent(reason: "no index at \(indexPath)") }
        let index: IndexedDataset
        do { index = try IndexedDataset(path: indexPath) } catch { return .absent(reason: "\(error)") }
        guard let wanted = try? selection.canonicalText() else { return .absent(reason: "the dataset path \(selection.path) cannot be read") }
        guard index.selection == wanted else {
            return .absent(reason: "index \(indexPath) was built for another selection (\(index.selection.split(separator: "\n").joined(separator: ", ")))")
        }
        do {
            let changes = try index.datasetChanges()
            return changes.isEmpty ? .reusable(index) : .datasetChanged(index, changes)
        } catch {
            return .absent(reason: "\(error)")
        }
    }
}
