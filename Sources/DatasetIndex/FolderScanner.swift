import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Walks an image folder once, directory by directory, in the global code-point order of relative paths
/// (Protocols/INDEX.md §3.1): each directory's entries are sorted with directories keyed as `name/`, so a
/// depth-first walk emits keys already in order and every item is final as soon as the walk passes it.
struct FolderScanner {
    let context: ScanContext
    let root: String
    static let splitNames = ["train", "val"]

    /// A listed entry: what the walk does with it is decided by `type`.
    private enum EntryType: UInt8 {
        case file = 0x66        // f: regular file, or a symbolic link to one
        case directory = 0x64   // d
        case linkToDirectory = 0x4C   // L: not followed, so a link cannot make a cycle
        case dangling = 0x44    // D: symbolic link to nothing
        case fifo = 0x70, characterDevice = 0x63, blockDevice = 0x62, socket = 0x73, unknown = 0x3F

        var refusal: String? {
            switch self {
            case .file, .directory: return nil
            case .linkToDirectory: return "is a symbolic link to a directory, which the index does not follow"
            case .dangling: return "is a symbolic link to nothing"
            case .fifo: return "is a FIFO, not a regular file"
            case .characterDevice: return "is a character device, not a regular file"
            case .blockDevice: return "is a block device, not a regular file"
            case .socket: return "is a socket, not a regular file"
            case .unknown: return "is not a regular file"
            }
        }
    }

    func run() throws -> [String] {
        let rootFD = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard rootFD >= 0 else { throw IndexError("cannot read image folder \(root): \(errnoText())") }
        defer { close(rootFD) }
        let top = try listAll(rootFD, relative: "")
        let splits = top.filter { $0.type == .directory && Self.splitNames.contains($0.name) }.map(\.name)
        if let wanted = context.selection.split, !splits.contains(wanted) {
            throw IndexError("image folder \(root) has no \(wanted)/ folder, so split '\(wanted)' selects nothing")
        }
        // Class ids are the sorted class folder names (over every split, so train and val agree): known
        // before the first item, which is what lets items be final as the walk passes them.
        var classes = Set<String>()
        if splits.isEmpty {
            top.filter { $0.type == .directory }.forEach { classes.insert($0.name) }
        } else {
            for split in splits {
                let fd = openat(rootFD, split, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                guard fd >= 0 else { continue }   // reported as unreadable by the walk below
                defer { close(fd) }
                if let entries = try? listAll(fd, relative: split, report: false) {
                    entries.filter { $0.type == .directory }.forEach { classes.insert($0.name) }
                }
            }
        }
        let classNames = classes.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) }
        let labelOf = Dictionary(uniqueKeysWithValues: classNames.enumerated().map { ($1, Int32($0)) })

        try fingerprintDirectory(rootFD, relative: ".")
        // The root's listing above is walked as is (a second listing could report a partial read twice).
        for (name, type) in top where !context.full {
            let relative = name
            if splits.isEmpty {
                guard type == .directory else { try context.dead(relative, (type.refusal ?? "is a file") + " directly in the image folder, outside any class folder"); continue }
                try walk(parent: rootFD, name: name, relative: relative, label: labelOf[name]!)
            } else if type == .directory && splits.contains(name) {
                if let wanted = context.selection.split, wanted != name { continue }
                try walkDirectory(parent: rootFD, name: name, relative: relative) { fd, className, type, classRelative in
                    guard type == .directory else { try context.dead(classRelative, (type.refusal ?? "is a file") + " directly in \(name)/, outside any class folder"); return }
                    try walk(parent: fd, name: className, relative: classRelative, label: labelOf[className]!)
                }
            } else {
                try context.dead(type == .directory ? relative + "/" : relative,
                                 "is outside the split folders (\(splits.joined(separator: ", "))), so nothing in it is indexed")
            }
        }
        return classNames
    }

    /// Every regular file below `name` becomes an item with `label`.
    private func walk(parent: Int32, name: String, relative: String, label: Int32) throws {
        try walkDirectory(parent: parent, name: name, relative: relative) { fd, child, type, childRelative in
            switch type {
            case .file:
                if child.utf8.contains(where: { $0 >= 0x80 }) && String(validating: Array(child.utf8), as: UTF8.self) == nil {
                    try context.dead(childRelative, "file name is not UTF-8")
                    return
                }
                try context.writer.appendItem(key: childRelative, label: label)
                try context.publishIfDue()
            case .directory:
                try walk(parent: fd, name: child, relative: childRelative, label: label)
            default:
                try context.dead(childRelative, type.refusal!)
            }
        }
    }

    /// Opens `parent/name`, fingerprints it and calls `body` for each entry in order; an unreadable
    /// directory is a dead letter, never a stop.
    private func walkDirectory(parent: Int32, name: String, relative: String,
                               _ body: (Int32, String, EntryType, String) throws -> Void) throws {
        let fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { try context.dead(relative + "/", "cannot read directory: \(errnoText())"); return }
        defer { close(fd) }
        try fingerprintDirectory(fd, relative: relative)
        try walkEntries(fd, relative: relative) { child, type, childRelative in
            guard !context.full else { return }
            try body(fd, child, type, childRelative)
        }
    }

    private func fingerprintDirectory(_ fd: Int32, relative: String) throws {
        var info = stat()
        guard fstat(fd, &info) == 0 else { return }
        try context.writer.addFingerprint(FingerprintEntry(path: relative, kind: .directory, size: UInt64(info.st_size), mtimeNs: mtimeNs(info), sampleHash: 0))
    }

    /// Lists `fd` through the external sorter and calls `body` per entry in order.
    private func walkEntries(_ fd: Int32, relative: String, report: Bool = true, _ body: (String, EntryType, String) throws -> Void) throws {
        let sorter = ExternalSorter(runBytes: context.options.sortRunBytes, temporaryDirectory: context.temporaryDirectory)
        if let failure = try list(fd, into: sorter), report {
            try context.dead(relative.isEmpty ? "./" : relative + "/", "reading the directory failed part way: \(failure)")
        }
        let sorted = try sorter.finish()
        while let entry = try sorted.next() {
            if context.full { return }
            let type = EntryType(rawValue: entry[entry.count - 1]) ?? .unknown
            var nameEnd = entry.count - 2
            if type == .directory { nameEnd -= 1 }   // drop the sorting slash
            let name = String(decoding: entry[0..<nameEnd], as: UTF8.self)
            try body(name, type, relative.isEmpty ? name : relative + "/" + name)
        }
    }

    /// The entries of a small directory (the root, a split folder), in order.
    private func listAll(_ fd: Int32, relative: String, report: Bool = true) throws -> [(name: String, type: EntryType)] {
        var result: [(String, EntryType)] = []
        try walkEntries(fd, relative: relative, report: report) { name, type, _ in result.append((name, type)) }
        return result
    }

    /// Adds each entry of `fd` as `name[/] NUL type`; returns the error text if reading stopped early.
    private func list(_ fd: Int32, into sorter: ExternalSorter) throws -> String? {
        let own = dup(fd)
        guard own >= 0, let dir = fdopendir(own) else { return errnoText() }
        defer { closedir(dir) }
        rewinddir(dir)   // a dup shares the directory offset with `fd`, which an earlier listing moved
        while true {
            errno = 0
            guard let entry = readdir(dir) else { return errno == 0 ? nil : errnoText() }
            var bytes: [UInt8] = withUnsafePointer(to: &entry.pointee.d_name) {
                $0.withMemoryRebound(to: UInt8.self, capacity: 256) { Array(UnsafeBufferPointer(start: $0, count: strlen(UnsafeRawPointer($0).assumingMemoryBound(to: CChar.self)))) }
            }
            if bytes == [0x2E] || bytes == [0x2E, 0x2E] { continue }
            let type = classify(fd, entry.pointee.d_type, bytes)
            if type == .directory { bytes.append(0x2F) }
            bytes.append(0)
            bytes.append(type.rawValue)
            try sorter.add(bytes)
        }
    }

    private func classify(_ fd: Int32, _ dType: UInt8, _ name: [UInt8]) -> EntryType {
        switch dType {
        case 8: return .file
        case 4: return .directory
        case 1: return .fifo
        case 2: return .characterDevice
        case 6: return .blockDevice
        case 12: return .socket
        default: break   // 10 (symbolic link) or 0 (unknown): ask the file system
        }
        var info = stat()
        let found = (name + [0]).withUnsafeBufferPointer { p in
            p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { fstatat(fd, $0, &info, AT_SYMLINK_NOFOLLOW) }
        }
        guard found == 0 else { return .dangling }
        if (info.st_mode & S_IFMT) == S_IFLNK {
            let followed = (name + [0]).withUnsafeBufferPointer { p in
                p.baseAddress!.withMemoryRebound(to: CChar.self, capacity: p.count) { fstatat(fd, $0, &info, 0) }
            }
            guard followed == 0 else { return .dangling }
            return (info.st_mode & S_IFMT) == S_IFDIR ? .linkToDirectory : mode(info)
        }
        return mode(info)
    }

    private func mode(_ info: stat) -> EntryType {
        switch info.st_mode & S_IFMT {
        case S_IFREG: return .file
        case S_IFDIR: return .directory
        case S_IFIFO: return .fifo
        case S_IFCHR: return .characterDevice
        case S_IFBLK: return .blockDevice
        case S_IFSOCK: return .socket
        default: return .unknown
        }
    }
}
