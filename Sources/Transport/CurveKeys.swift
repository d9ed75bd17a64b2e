import CZMQ
import DurableFile
import Foundation

/// Why a CURVE key or key file was refused. Never carries key material, only file names and reasons.
public enum CurveKeyError: Error, CustomStringConvertible {
    /// libzmq was built without CURVE support (no libsodium), so no key can be made or used.
    case curveUnavailable
    /// A key was not 40 characters of Z85; `what` names the key or the file it came from.
    case malformedKey(what: String)
    /// A secret key file can be read or written by group or others; it is not loaded.
    case secretKeyFileTooOpen(path: String, mode: mode_t)
    /// A secret key file does not derive the public key it was loaded with.
    case mismatchedKeyPair(publicFile: String, secretFile: String)
    /// Writing a key pair would replace an existing file.
    case fileExists(path: String)
    /// A key pair name that is empty or would leave the output folder.
    case invalidName(String)
    /// A system call on a key file failed.
    case io(path: String, call: String, errno: Int32)

    /// One line naming the file or key concerned and what to do; never key material.
    public var description: String {
        switch self {
        case .curveUnavailable:
            return "this libzmq has no CURVE support (built without libsodium)"
        case .malformedKey(let what):
            return "\(what): not a CURVE key (expected 40 characters of Z85)"
        case .secretKeyFileTooOpen(let path, let mode):
            return "\(path): secret key file has mode \(String(mode & 0o777, radix: 8)), readable or writable by group or others; "
                + "refusing to load it (run: chmod 600 \(path))"
        case .mismatchedKeyPair(let publicFile, let secretFile):
            return "\(secretFile) is not the secret key of \(publicFile)"
        case .fileExists(let path):
            return "\(path) already exists; refusing to overwrite a key"
        case .invalidName(let name):
            return "invalid key name \"\(name)\" (use letters, digits, '-', '_', '.'; not starting with '.')"
        case .io(let path, let call, let code):
            return "\(path): \(call): \(String(cString: strerror(code)))"
        }
    }
}

/// A CURVE long-term key pair in Z85 (40 characters each).
///
/// The secret key is module-internal and never appears in `description`, `debugDescription` or
/// `dump()`: only the public key is ever printed, so logging a key pair cannot leak it.
public struct CurveKeyPair: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The Z85 public key: safe to print, share, and put in allow-lists.
    public let publicKey: String
    let secretKey: String

    init(publicKey: String, secretKey: String) {
        self.publicKey = publicKey
        self.secretKey = secretKey
    }

    /// A fresh random key pair from libzmq (libsodium's RNG).
    public static func generate() throws -> CurveKeyPair {
        guard zmq_has("curve") != 0 else { throw CurveKeyError.curveUnavailable }
        var publicBuffer = [CChar](repeating: 0, count: 41)
        var secretBuffer = [CChar](repeating: 0, count: 41)
        defer { wipe(&secretBuffer) }
        guard zmq_curve_keypair(&publicBuffer, &secretBuffer) == 0 else { throw CurveKeyError.curveUnavailable }
        return CurveKeyPair(publicKey: string(publicBuffer), secretKey: string(secretBuffer))
    }

    /// Loads a pair written by `write(to:name:)` (or any two files holding one Z85 key each).
    ///
    /// Throws, naming the file, when the secret key file is accessible to group or others, when either
    /// key is malformed, or when the secret key does not belong to the public key.
    public static func load(publicFile: URL, secretFile: URL) throws -> CurveKeyPair {
        let publicKey = try loadPublicKey(file: publicFile)
        let secretKey = try readKeyFile(secretFile, secret: true)
        guard Z85.isKey(secretKey) else { throw CurveKeyError.malformedKey(what: secretFile.path) }
        guard derivePublicKey(secretKey: secretKey) == publicKey else {
            throw CurveKeyError.mismatchedKeyPair(publicFile: publicFile.path, secretFile: secretFile.path)
        }
        return CurveKeyPair(publicKey: publicKey, secretKey: secretKey)
    }

    /// Loads a secret key file alone, deriving its public key.
    public static func load(secretFile: URL) throws -> CurveKeyPair {
        let secretKey = try readKeyFile(secretFile, secret: true)
        guard Z85.isKey(secretKey), let publicKey = derivePublicKey(secretKey: secretKey) else {
            throw CurveKeyError.malformedKey(what: secretFile.path)
        }
        return CurveKeyPair(publicKey: publicKey, secretKey: secretKey)
    }

    /// Loads `NAME.pub` and `NAME.key` from `directory`, as written by `write(to:name:)`.
    public static func load(directory: URL, name: String) throws -> CurveKeyPair {
        try load(publicFile: directory.appendingPathComponent(name + ".pub"),
                 secretFile: directory.appendingPathComponent(name + ".key"))
    }

    /// Reads one public key file (40 characters of Z85, surrounding whitespace ignored).
    public static func loadPublicKey(file: URL) throws -> String {
        let key = try readKeyFile(file, secret: false)
        guard Z85.isKey(key) else { throw CurveKeyError.malformedKey(what: file.path) }
        return key
    }

    /// Every `*.pub` file in `directory`: the allow-list a server accepts clients from.
    ///
    /// Other files (including `*.key`) are ignored, so a folder of whole key pairs works too; a
    /// malformed `.pub` file throws rather than silently shrinking the list.
    public static func loadPublicKeys(directory: URL) throws -> Set<String> {
        // access() first: Foundation's error would not say whether the folder is missing or unreadable.
        guard access(directory.path, R_OK | X_OK) == 0 else { throw CurveKeyError.io(path: directory.path, call: "open directory", errno: errno) }
        let names: [String]
        do {
            names = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        } catch {
            throw CurveKeyError.io(path: directory.path, call: "list directory", errno: ENOTDIR)
        }
        var keys = Set<String>()
        for name in names.sorted() where name.hasSuffix(".pub") && !name.hasPrefix(".") {
            keys.insert(try loadPublicKey(file: directory.appendingPathComponent(name)))
        }
        return keys
    }

    /// Writes `NAME.pub` (mode 0644) and `NAME.key` (mode 0600) into `directory`, creating it (0700) if needed.
    ///
    /// Each file is written to a temporary name created with its final mode, synced, then linked into
    /// place, so the secret key is never readable by others, not even for a moment, and a crash leaves
    /// no half-written key. Existing files are never replaced.
    /// - Returns: the two files written.
    @discardableResult
    public func write(to directory: URL, name: String) throws -> (publicFile: URL, secretFile: URL) {
        guard Self.isValidName(name) else { throw CurveKeyError.invalidName(name) }
        if !FileManager.default.fileExists(atPath: directory.path) {
            do {
                try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true,
                                                        attributes: [.posixPermissions: 0o700])
            } catch {
                throw CurveKeyError.io(path: directory.path, call: "mkdir", errno: EACCES)
            }
        }
        let publicFile = directory.appendingPathComponent(name + ".pub")
        let secretFile = directory.appendingPathComponent(name + ".key")
        // Check both first: refusing halfway would leave a lone public key with no secret.
        for file in [publicFile, secretFile] where FileManager.default.fileExists(atPath: file.path) {
            throw CurveKeyError.fileExists(path: file.path)
        }
        try Self.writeAtomically(Array((secretKey + "\n").utf8), to: secretFile, mode: 0o600)
        try Self.writeAtomically(Array((publicKey + "\n").utf8), to: publicFile, mode: 0o644)
        // Best effort: both files are complete and synced; a lost directory entry only loses the new names.
        try? DurableFile.syncDirectory(directory.path)
        return (publicFile, secretFile)
    }

    /// Prints only the public key.
    public var description: String { "CurveKeyPair(public: \(publicKey))" }
    /// Prints only the public key.
    public var debugDescription: String { description }
    /// Shows only the public key to `dump()` and reflection.
    public var customMirror: Mirror { Mirror(self, children: ["publicKey": publicKey]) }

    /// The key loader's rule for secret key files: no access for group or others (0600, 0400).
    /// Deployment files (Kubernetes Secret modes) are checked against this same function.
    public static func acceptsSecretKeyMode(_ mode: mode_t) -> Bool { mode & 0o077 == 0 }

    // MARK: - Helpers

    static func isValidName(_ name: String) -> Bool {
        guard !name.isEmpty, !name.hasPrefix("."), name.utf8.count <= 200 else { return false }
        return name.unicodeScalars.allSatisfy { CharacterSet.alphanumerics.contains($0) || "-_.".unicodeScalars.contains($0) }
    }

    /// The public key belonging to `secretKey`, or nil when it is not a valid key.
    static func derivePublicKey(secretKey: String) -> String? {
        var publicBuffer = [CChar](repeating: 0, count: 41)
        var secretBuffer = Array(secretKey.utf8CString)
        defer { wipe(&secretBuffer) }
        guard secretBuffer.count == 41, zmq_curve_public(&publicBuffer, secretBuffer) == 0 else { return nil }
        return string(publicBuffer)
    }

    /// Reads a small key file; for a secret key, checks the mode on the opened descriptor so the
    /// file checked is the file read.
    static func readKeyFile(_ file: URL, secret: Bool) throws -> String {
        do {
            let opened = try DurableFile.open(file.path, access: .readOnly)
            let info = try opened.status()
            guard info.st_mode & S_IFMT == S_IFREG else { throw CurveKeyError.io(path: file.path, call: "open (not a regular file)", errno: EINVAL) }
            if secret && !acceptsSecretKeyMode(info.st_mode) {
                throw CurveKeyError.secretKeyFileTooOpen(path: file.path, mode: info.st_mode)
            }
            // A key file is 40 characters and a newline; anything much larger is not a key file.
            var buffer = [UInt8](repeating: 0, count: 256)
            defer { if secret { wipe(&buffer) } }
            let total = try buffer.withUnsafeMutableBytes { try opened.readAvailable(into: $0, at: 0) }
            guard total < buffer.count else { throw CurveKeyError.malformedKey(what: file.path) }
            return String(decoding: buffer[..<total], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        } catch let error as DurableFileError {
            throw CurveKeyError(error)
        }
    }

    /// Writes `bytes` to a temporary file created with exactly `mode`, then links it to `file` (which must not exist).
    static func writeAtomically(_ bytes: [UInt8], to file: URL, mode: mode_t) throws {
        var bytes = bytes
        defer { wipe(&bytes) }
        let temporary = file.path + ".tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        // Exclusive and never through a link: no planted file or symlink is written through; the mode is
        // exact before any byte is written, so the secret is never readable by others, not even for a moment.
        do {
            try bytes.withUnsafeBytes { try DurableFile.createSynced(temporary, bytes: $0, mode: mode, exactMode: true) }
        } catch let error as DurableFileError {
            throw CurveKeyError(error)
        }
        defer { unlink(temporary) }
        // link() fails if the target exists, unlike rename(): a key that appeared meanwhile is kept.
        guard link(temporary, file.path) == 0 else {
            let code = errno
            if code == EEXIST { throw CurveKeyError.fileExists(path: file.path) }
            throw CurveKeyError.io(path: file.path, call: "link", errno: code)
        }
    }
}

extension CurveKeyError {
    /// The key loader's error for a failed file operation.
    init(_ error: DurableFileError) {
        switch error {
        case let .io(path, operation, code): self = .io(path: path, call: operation, errno: code)
        case let .endOfFile(path, _, _, _): self = .malformedKey(what: path)
        case let .locked(path, _): self = .io(path: path, call: "flock", errno: EWOULDBLOCK)
        }
    }
}

/// Overwrites a buffer that held secret material before it is freed.
func wipe<T: FixedWidthInteger>(_ buffer: inout [T]) {
    buffer.withUnsafeMutableBytes { raw in
        if let base = raw.baseAddress { memset(base, 0, raw.count) }
    }
}

/// The C string in a NUL-terminated buffer.
private func string(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

/// ZeroMQ's Z85 text encoding of binary keys (RFC 32).
enum Z85 {
    private static let alphabet = Set("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#".utf8)

    /// True for a 40-character Z85 string, the text form of a 32-byte CURVE key.
    static func isKey(_ text: String) -> Bool {
        text.utf8.count == 40 && text.utf8.allSatisfy { alphabet.contains($0) }
    }

    /// Z85 of `bytes`, whose count must be a multiple of 4 (a CURVE key is 32 bytes).
    static func encode(_ bytes: [UInt8]) -> String? {
        guard bytes.count % 4 == 0 else { return nil }
        var out = [CChar](repeating: 0, count: bytes.count * 5 / 4 + 1)
        guard zmq_z85_encode(&out, bytes, bytes.count) != nil else { return nil }
        return string(out)
    }
}
