import Foundation

/// A cluster's CURVE key folder, the one layout every launcher, manifest and role reads:
///
///     DIR/coordinator.key  coordinator.pub
///     DIR/head.key         head.pub
///     DIR/workers/NAME.key workers/NAME.pub   one pair per worker
///
/// The public key files bind roles: the coordinator admits `head.pub` as the head and each
/// `workers/*.pub` as that worker; the head admits `workers/*.pub`. A host needs only its own
/// `.key` and the `.pub` files. Revoking a worker is deleting its `workers/NAME.pub` where the
/// coordinator and head read it and sending them SIGHUP (or restarting them).
public struct ClusterKeyFolder: Sendable {
    /// The folder.
    public let url: URL
    /// The subfolder holding one pair per worker.
    public static let workersFolder = "workers"

    /// The folder at `path` (nothing is read until a key is asked for).
    public init(path: String) { url = URL(fileURLWithPath: path, isDirectory: true) }

    /// Makes a new key folder (mode 0700) with the coordinator's, the head's and one pair per worker name.
    /// Refuses to overwrite an existing key; worker names that are already there are kept, so adding
    /// workers to an existing folder is the same command with a longer list.
    @discardableResult
    public static func generate(at path: String, workers: [String]) throws -> ClusterKeyFolder {
        let folder = ClusterKeyFolder(path: path)
        try makePrivateDirectory(folder.url)
        try makePrivateDirectory(folder.url.appendingPathComponent(workersFolder))
        for role in [PeerRole.coordinator, .head] + workers.map(PeerRole.worker) {
            let (directory, name) = folder.location(role)
            guard !FileManager.default.fileExists(atPath: directory.appendingPathComponent(name + ".pub").path) else { continue }
            try CurveKeyPair.generate().write(to: directory, name: name)
        }
        return folder
    }

    /// The folder and file stem of `role`'s key files.
    func location(_ role: PeerRole) -> (directory: URL, name: String) {
        switch role {
        case .coordinator: return (url, "coordinator")
        case .head: return (url, "head")
        case .worker(let name): return (url.appendingPathComponent(Self.workersFolder), name)
        }
    }

    /// The key pair of `role` (its secret key file must be mode 0600 or stricter). Only the `.key`
    /// file is needed: the public key is derived from it, and checked against the `.pub` file when
    /// one is there. (A revoked worker's host may keep its `.pub`; the servers' folders decide.)
    public func pair(_ role: PeerRole) throws -> CurveKeyPair {
        if case .worker(let name) = role, !CurveKeyPair.isValidName(name) { throw CurveKeyError.invalidName(name) }
        let (directory, name) = location(role)
        let publicFile = directory.appendingPathComponent(name + ".pub")
        if FileManager.default.fileExists(atPath: publicFile.path) { return try CurveKeyPair.load(directory: directory, name: name) }
        return try CurveKeyPair.load(secretFile: directory.appendingPathComponent(name + ".key"))
    }

    /// The public key of `role`.
    public func publicKey(_ role: PeerRole) throws -> String {
        let (directory, name) = location(role)
        return try CurveKeyPair.loadPublicKey(file: directory.appendingPathComponent(name + ".pub"))
    }

    /// Every worker's public key by name (`workers/NAME.pub`).
    public func workerKeys() throws -> [String: String] {
        let directory = url.appendingPathComponent(Self.workersFolder)
        guard FileManager.default.fileExists(atPath: directory.path) else { return [:] }
        var keys: [String: String] = [:]
        for file in try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        where file.hasSuffix(".pub") && !file.hasPrefix(".") {
            keys[String(file.dropLast(4))] = try CurveKeyPair.loadPublicKey(file: directory.appendingPathComponent(file))
        }
        return keys
    }

    /// The keys a server of `server`'s kind admits, each bound to its role, re-read on `reload()`:
    /// the coordinator admits the head and the workers, the head admits the workers.
    public func peers(admittedBy server: PeerRole.Kind) throws -> PeerDirectory {
        let folder = self
        return try PeerDirectory {
            var table: [String: PeerRole] = [:]
            for (name, key) in try folder.workerKeys() { table[key] = .worker(name) }
            if server == .coordinator { table[try folder.publicKey(.head)] = .head }
            guard !table.isEmpty else { throw ZMQSecurityError.emptyAllowList }
            return table
        }
    }
}

/// Creates `url` with mode 0700 if missing; an existing folder that group or others can enter is tightened.
func makePrivateDirectory(_ url: URL) throws {
    let parent = url.deletingLastPathComponent()
    if !FileManager.default.fileExists(atPath: parent.path) {
        try? FileManager.default.createDirectory(at: parent, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }
    if mkdir(url.path, 0o700) != 0 && errno != EEXIST {
        throw CurveKeyError.io(path: url.path, call: "mkdir", errno: errno)
    }
    guard chmod(url.path, 0o700) == 0 else { throw CurveKeyError.io(path: url.path, call: "chmod", errno: errno) }
}
