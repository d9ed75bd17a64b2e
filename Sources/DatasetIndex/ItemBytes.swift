import DurableFile
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

extension ItemLocator {
    /// The item's encoded bytes: the whole file, or exactly the tar member's `size` bytes at `offset` (read
    /// with `pread`, so a shard is never loaded whole). The one reading path for every locator, used by
    /// `featstream extract`, calibration and the workers alike. Throws `IndexError` whose sentence names the
    /// file and what failed (it becomes the item's dead-letter reason): it cannot be opened, is shorter than
    /// the index says (the file shrank, or the tar lies about a member size), or the locator is `.rejected`.
    public func bytes() throws -> [UInt8] {
        switch self {
        case .file(let path):
            let file = try openForReading(path)
            let size: Int
            do { size = try file.size() } catch { throw IndexError("cannot stat \(path): \(systemReason(error))") }
            return try readExactly(file, offset: 0, size: size, what: path)
        case let .tarMember(path, offset, size):
            return try readExactly(openForReading(path), offset: Int(offset), size: Int(size), what: "\(path) at offset \(offset)")
        case .rejected(let reason):
            throw IndexError(reason)
        }
    }
}

private func openForReading(_ path: String) throws -> DurableFile {
    do {
        return try DurableFile.open(path, access: .readOnly)
    } catch {
        throw IndexError("cannot open \(path): \(systemReason(error))")
    }
}

/// The system's words for a failed file operation (`strerror`), without the path the caller names itself.
private func systemReason(_ error: Error) -> String {
    if case let DurableFileError.io(_, _, code) = error { return String(cString: strerror(code)) }
    return "\(error)"
}

private func readExactly(_ file: DurableFile, offset: Int, size: Int, what: String) throws -> [UInt8] {
    do {
        return try file.read(count: size, at: offset)
    } catch let DurableFileError.endOfFile(_, _, wanted, read) {
        throw IndexError("unexpected end of file reading \(what) (\(read) of \(wanted) bytes)")
    } catch {
        throw IndexError("cannot read \(what): \(systemReason(error))")
    }
}
