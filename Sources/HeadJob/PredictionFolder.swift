import Foundation
import ImageInput
#if canImport(Glibc)
import Glibc
#endif

/// One entry `predict` met below a folder: a file to classify, or one it refuses and why.
public struct PredictionInput: Equatable, Sendable {
    /// The entry's path (the folder's path joined with its relative path); a directory ends in `/`.
    public var path: String
    /// Why the entry is not classified; nil for a file whose signature is an image format the decoder reads.
    public var refusal: String?
}

/// Lists a folder for `predict` with the same rule as the dataset index's folder scan (`DatasetIndex`,
/// Protocols/INDEX.md §3.1): formats are told by a file's bytes, never its extension, so every
/// regular file below the folder is either classified or refused with its reason, and nothing is
/// skipped silently. What counts as an image is decided in one place, `ImageFormat.decodable`: a file
/// it refuses is named here from its first bytes (without reading the rest), with the reason a decode
/// would give ("unsupported format: HEIC", "not an image (unknown signature)", "empty file").
public enum PredictionFolder {
    /// Every entry below `folder` in code-point order of relative path (sub-folders walked, symbolic links
    /// to files followed, links to folders not), except the paths in `excluding` (`predict`'s own output).
    public static func entries(of folder: String, excluding: Set<String> = []) throws -> [PredictionInput] {
        var info = stat()
        guard stat(folder, &info) == 0 else { throw PredictorError("cannot read folder \(folder): \(errnoText())") }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { throw PredictorError("\(folder) is not a folder") }
        let excluded = Set(excluding.map { ($0 as NSString).standardizingPath })
        var result: [PredictionInput] = []
        walk(folder, into: &result, excluding: excluded)
        return result
    }

    private static func walk(_ directory: String, into result: inout [PredictionInput], excluding: Set<String>) {
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory)
        } catch {
            result.append(PredictionInput(path: directory + "/", refusal: "cannot read the folder: \(reason(error))"))
            return
        }
        // Directories sort as `name/`, so the walk emits whole relative paths in code-point order.
        let entries = names.map { name -> (name: String, key: String, kind: Kind) in
            let kind = Kind(of: directory + "/" + name)
            return (name, kind == .directory ? name + "/" : name, kind)
        }.sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
        for entry in entries {
            let path = directory + "/" + entry.name
            if excluding.contains((path as NSString).standardizingPath) { continue }
            switch entry.kind {
            case .directory:
                walk(path, into: &result, excluding: excluding)
            case .file:
                result.append(PredictionInput(path: path, refusal: signatureRefusal(path)))
            case .refused(let why):
                result.append(PredictionInput(path: path, refusal: why))
            }
        }
    }

    /// What an entry is, told without following a link to a directory (a link cannot make a cycle).
    private enum Kind: Equatable {
        case file, directory
        case refused(String)

        init(of path: String) {
            var info = stat()
            guard lstat(path, &info) == 0 else { self = .refused("cannot be examined: \(errnoText())"); return }
            if (info.st_mode & S_IFMT) == S_IFLNK {
                guard stat(path, &info) == 0 else { self = .refused("is a symbolic link to nothing"); return }
                if (info.st_mode & S_IFMT) == S_IFDIR {
                    self = .refused("is a symbolic link to a directory, which predict does not follow")
                    return
                }
            }
            switch info.st_mode & S_IFMT {
            case S_IFREG: self = .file
            case S_IFDIR: self = .directory
            case S_IFIFO: self = .refused("is a FIFO, not a regular file")
            case S_IFCHR: self = .refused("is a character device, not a regular file")
            case S_IFBLK: self = .refused("is a block device, not a regular file")
            case S_IFSOCK: self = .refused("is a socket, not a regular file")
            default: self = .refused("is not a regular file")
            }
        }
    }

    /// Why the file at `path` is not an image, from its first bytes; nil when it is one the decoder reads
    /// (it may still turn out corrupt when decoded, which `Predictor.classify` reports).
    static func signatureRefusal(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
        guard fd >= 0 else { return "cannot read the file: \(errnoText())" }
        defer { close(fd) }
        var head = [UInt8](repeating: 0, count: ImageFormat.signatureLength)
        var filled = 0
        while filled < head.count {
            let count = head.withUnsafeMutableBytes { read(fd, $0.baseAddress! + filled, $0.count - filled) }
            if count < 0 && errno == EINTR { continue }
            guard count >= 0 else { return "cannot read the file: \(errnoText())" }
            if count == 0 { break }
            filled += count
        }
        do {
            _ = try ImageFormat.decodable(head.prefix(filled), name: path)
            return nil
        } catch let error as ImageDecodeError {
            return error.reason
        } catch {
            return reason(error)
        }
    }
}

private func errnoText() -> String { String(cString: strerror(errno)) }

/// A Foundation error as a sentence (its localized description), not a type dump.
private func reason(_ error: Error) -> String {
    (error as NSError).localizedDescription
}
