import CFileSpace
import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The segment being appended to.
final class SegmentWriter {
    let url: URL
    let number: Int
    let file: DurableFile
    /// Bytes of whole records; the next record goes here.
    var length: Int

    /// Opens an existing segment, cutting off anything after its last whole record.
    init(url: URL, number: Int, truncatingTo length: Int) throws {
        self.url = url
        self.number = number
        self.length = length
        do {
            file = try DurableFile.open(url.path, access: .readWrite)
            if try file.size() != length {
                try file.truncate(to: length)
                try file.syncData()
            }
        } catch let error as DurableFileError {
            throw FeatureStoreError(error, during: "truncate an interrupted append")
        }
    }

    /// Creates a new, empty segment (the caller syncs the directory).
    init(creating url: URL, number: Int) throws {
        self.url = url
        self.number = number
        do {
            file = try DurableFile.open(url.path, access: .readWrite, creation: .exclusive(mode: 0o644))
        } catch let error as DurableFileError {
            throw FeatureStoreError(error)
        }
        length = 0
    }

    /// Appends ask the file system for blocks this far ahead at a time.
    static let reservationStep = 32 << 20
    /// Blocks are reserved up to here (beyond the file's size; see `write`); 0 while nothing is.
    private var reservedEnd = 0
    /// Never reserve past this size: the store's segment limit, where the next segment starts (a small
    /// limit on tmpfs, as in the simulator, made each 32 MiB reservation zero 32 MiB of memory).
    var reservationCeiling = Int.max

    deinit {
        // Truncating to the current size changes no byte; it hands back the blocks reserved past the end.
        if reservedEnd > 0, let size = try? file.size() { try? file.truncate(to: size) }
    }

    /// Writes `pieces` one after another from `offset`, every byte or an error.
    ///
    /// Before writing past the blocks reserved so far, it reserves the next `reservationStep` bytes
    /// (keeping the file's size): appends into reserved blocks cost the kernel about a quarter less
    /// than appends that allocate page by page (ext4, README "Cluster benchmarks"). Reserving is best
    /// effort; where the file system cannot, or the disk is too full to, the write itself says so.
    func write(_ pieces: [[UInt8]], at offset: Int) throws {
        let end = offset + pieces.reduce(0) { $0 + $1.count }
        if end > reservedEnd {
            let from = max(reservedEnd, offset)
            let to = min(end + Self.reservationStep, max(end, reservationCeiling))
            if to > from, fs_reserve_space(file.descriptor, off_t(from), off_t(to - from)) == 0 { reservedEnd = to }
        }
        do {
            try file.write(pieces, at: offset)
        } catch let error as DurableFileError {
            throw FeatureStoreError(error)
        }
    }
}
