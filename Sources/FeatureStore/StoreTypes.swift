import DurableFile
import Foundation
import WireProtocol
#if canImport(Glibc)
import Glibc
#endif

/// Descriptive information recorded in `store.json`; never interpreted by the store.
public struct StoreMetadata: Codable, Equatable, Sendable {
    /// Name of the backbone that produced the features.
    public var model: String?
    /// Class names, indexed by label.
    public var classNames: [String]?
    /// The precision the backbone extracted the features at ("fp32" or "int8"): a head trained on them
    /// must be fed features of the same precision. Nil in stores created before it was recorded.
    public var precision: String?

    /// Metadata with any subset of fields.
    public init(model: String? = nil, classNames: [String]? = nil, precision: String? = nil) {
        self.model = model
        self.classNames = classNames
        self.precision = precision
    }

    /// Why features recorded at this metadata's `precision` must not meet a model config at `wanted`, or
    /// nil when they may (same precision, or a store from before precision was recorded). The one
    /// wording for the head reopening a store and for `featstream train` (STORE.md §1).
    public func precisionMismatch(wanted: String, store: String) -> String? {
        guard let precision, precision != wanted else { return nil }
        return "the store \(store) holds features extracted at \(precision), but the model config says \(wanted): "
            + "a head trained on one is wrong on the other. Give the config the job used"
            + (precision == "int8" ? " (\"precision\": \"int8\", with its calibration.json)" : " (fp32)")
            + ", or use another store"
    }
}

/// Why a store could not be created, opened, committed to or read.
public enum FeatureStoreError: Error, Equatable, CustomStringConvertible {
    /// `create` found an existing `store.json`.
    case alreadyExists(path: String)
    /// `open` found no `store.json`.
    case notAStore(path: String)
    /// `store.json` is unreadable, of an unknown format version, or describes an impossible store.
    case badManifest(path: String, reason: String)
    /// A committed record failed verification; the store refuses to open rather than hide it.
    case corruptShard(path: String, reason: String)
    /// `segments/` holds something that is not a segment file.
    case unexpectedEntry(path: String)
    /// Contents handed to `commit` are internally inconsistent or do not fit the store.
    case invalidContents(shardID: UInt32, reason: String)
    /// `commit` or `append` on a store opened without `forWriting`.
    case readOnly(path: String)
    /// A system call failed.
    case io(path: String, operation: String, errno: Int32)
    /// Another process writes this store (`holder` says which, when it could be read).
    case locked(path: String, holder: String)

    /// One line naming the path and the problem.
    public var description: String {
        switch self {
        case .alreadyExists(let path): "\(path): a feature store already exists here"
        case .notAStore(let path): "\(path): not a feature store (no store.json)"
        case .badManifest(let path, let reason): "\(path): \(reason)"
        case .corruptShard(let path, let reason): "\(path): corrupt shard: \(reason)"
        case .unexpectedEntry(let path): "\(path): unexpected entry in the shards directory"
        case .invalidContents(let shardID, let reason): "shard \(shardID): cannot commit: \(reason)"
        case .readOnly(let path): "\(path): opened read-only; open it for writing to commit"
        case .io(let path, let operation, let code): "\(path): \(operation) failed: \(String(cString: strerror(code)))"
        case .locked(let path, let holder): "\(path): the store is being written by \(holder); one writer at a time (stop it first, or use another store)"
        }
    }
}

/// A shard as committed: what its record's header says.
public struct CommittedShard: Equatable, Sendable {
    /// The shard's identifier.
    public var shardID: UInt32
    /// The lease attempt whose data was stored.
    public var attempt: UInt32
    /// Items in the shard; always `rows + deadLetters`.
    public var shardItemCount: UInt32
    /// Feature rows stored.
    public var rows: Int
    /// Items stored as dead letters.
    public var deadLetters: Int
    /// Bytes of the shard's record in its segment.
    public var bytes: Int
}

/// `store.json` as written (Protocols/STORE.md §1).
struct StoreManifest: Codable {
    var formatVersion: Int
    var dtype: String
    var dimension: Int
    var created: String
    var model: String?
    var classNames: [String]?
    var precision: String?
}

/// Where a shard's record is.
struct ShardLocation: Equatable {
    var segment: Int
    var offset: Int
    var header: CommitRecord.Header

    var committedShard: CommittedShard {
        CommittedShard(shardID: header.shardID, attempt: header.attempt, shardItemCount: header.shardItemCount,
                       rows: header.rows, deadLetters: header.deadLetters, bytes: header.recordLength)
    }
}

extension FeatureStoreError {
    /// The store's own error for a failed file operation; `operation` overrides the system call's name.
    init(_ error: DurableFileError, during operation: String? = nil) {
        switch error {
        case let .io(path, call, code):
            self = .io(path: path, operation: operation ?? call, errno: code)
        case let .endOfFile(path, _, _, _):
            self = .corruptShard(path: path, reason: "segment ends inside a record")
        case let .locked(path, pid):
            self = .locked(path: path, holder: pid.map { "process \($0)" } ?? "another process")
        }
    }
}
