import Foundation

/// Indexes torchvision-style image folders.
public enum ImageFolderReader {
    /// Split folder names recognised directly under the root.
    public static let splitNames = ["train", "val"]

    /// Walks `root`. Class folders are labelled by their position in the sorted union of class names across splits;
    /// files are ordered by relative path. Every file inside a class folder becomes an item whatever its name, so
    /// one that is not a decodable image is dead-lettered at decode time with the reason (formats are told by
    /// their bytes, not their extension) instead of vanishing. Files outside any class folder become dead letters.
    public static func index(root: String) throws -> DatasetIndex {
        let top = try subdirectories(of: root)
        let splits = splitNames.filter { top.contains($0) }
        // (relative class folder, split) pairs to scan.
        var classDirs: [(relative: String, className: String, split: String?)] = []
        if splits.isEmpty {
            classDirs = top.map { ($0, $0, nil) }
        } else {
            for split in splits {
                for name in try subdirectories(of: root + "/" + split) {
                    classDirs.append((split + "/" + name, name, split))
                }
            }
        }
        let classes = Array(Set(classDirs.map(\.className))).sorted(by: codePointOrder)
        let labelOf = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })

        var deadLetters: [DeadLetter] = []
        for folder in [""] + splits.map({ $0 + "/" }) {
            for name in try looseFiles(in: root + "/" + folder) where !(folder.isEmpty && splits.contains(name)) {
                deadLetters.append(DeadLetter(key: folder + name, reason: "the file is not inside a class folder"))
            }
        }
        deadLetters.sort { codePointOrder($0.key, $1.key) }

        var found: [(key: String, label: Int, split: String?)] = []
        for dir in classDirs {
            for file in try imageFiles(under: root + "/" + dir.relative) {
                found.append((dir.relative + "/" + file, labelOf[dir.className]!, dir.split))
            }
        }
        found.sort { codePointOrder($0.key, $1.key) }
        let items = found.enumerated().map { index, entry in
            DatasetItem(index: index, key: entry.key, label: entry.label, split: entry.split,
                        source: .file(path: root + "/" + entry.key))
        }
        return DatasetIndex(format: .imagefolder, root: root, classes: classes, items: items, deadLetters: deadLetters)
    }

    private static func isDirectory(_ path: String) -> Bool {
        var flag: ObjCBool = false
        return FileManager.default.fileExists(atPath: path, isDirectory: &flag) && flag.boolValue
    }

    private static func subdirectories(of path: String) throws -> [String] {
        guard isDirectory(path) else { throw DatasetError(reason: "\(path) is not a directory") }
        let names = try FileManager.default.contentsOfDirectory(atPath: path)
        return names.filter { isDirectory(path + "/" + $0) }.sorted(by: codePointOrder)
    }

    /// Names of the non-directories directly in `path`.
    private static func looseFiles(in path: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: path).filter { !isDirectory(path + "/" + $0) }
    }

    /// Relative paths of all files below `path`, recursing like torchvision's `os.walk`.
    private static func imageFiles(under path: String, prefix: String = "") throws -> [String] {
        var result: [String] = []
        for name in try FileManager.default.contentsOfDirectory(atPath: path) {
            let full = path + "/" + name
            if isDirectory(full) {
                result += try imageFiles(under: full, prefix: prefix + name + "/")
            } else {
                result.append(prefix + name)
            }
        }
        return result
    }
}
