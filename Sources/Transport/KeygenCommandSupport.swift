import Foundation

/// What `featstream keygen` made: where the files are and the public key to hand to peers.
public struct CurveKeygenResult: Sendable, CustomStringConvertible {
    /// The new public key (Z85): safe to print and to copy into servers' allow folders.
    public let publicKey: String
    /// `NAME.pub`, mode 0644.
    public let publicFile: URL
    /// `NAME.key`, mode 0600; its contents are never printed.
    public let secretFile: URL

    /// The public key and both file paths, for the command's output.
    public var description: String {
        "public key \(publicKey)\n  public: \(publicFile.path)\n  secret: \(secretFile.path) (mode 0600, keep it private)"
    }
}

/// `featstream keygen --out DIR --name NAME`: generates a CURVE key pair and writes `DIR/NAME.pub` and
/// `DIR/NAME.key`, refusing to overwrite existing files.
public func runCurveKeygen(outDirectory: String, name: String) throws -> CurveKeygenResult {
    let directory = URL(fileURLWithPath: outDirectory, isDirectory: true)
    let pair = try CurveKeyPair.generate()
    let files = try pair.write(to: directory, name: name)
    return CurveKeygenResult(publicKey: pair.publicKey, publicFile: files.publicFile, secretFile: files.secretFile)
}

/// Builds a role's `ZMQSecurity` from its command-line key files, for the CLI.
///
/// All of a role's CURVE flags or none: a partial set throws, naming what is missing, so a typo can
/// never leave a role silently in plaintext. No flags at all means `.none`.
public enum CurveFlags {
    /// A server socket's security: `--curve-secret`, `--curve-public`, `--curve-allow` (folder of `*.pub`).
    public static func server(secretFile: String?, publicFile: String?, allowDirectory: String?,
                              domain: String = ZMQSecurity.defaultDomain) throws -> ZMQSecurity {
        let given = [("--curve-secret", secretFile), ("--curve-public", publicFile), ("--curve-allow", allowDirectory)]
        guard let keys = try keyPair(given, secretFile: secretFile, publicFile: publicFile), let allowDirectory else { return .none }
        let allowList = try CurveKeyPair.loadPublicKeys(directory: URL(fileURLWithPath: allowDirectory, isDirectory: true))
        guard !allowList.isEmpty else {
            throw ZMQSecurityError.incompleteCurveFlags("--curve-allow \(allowDirectory) holds no *.pub files: no client could connect")
        }
        return try .curveServer(keys: keys, allowList: allowList, domain: domain)
    }

    /// A client socket's security: `--curve-secret`, `--curve-public` and the server's public key file
    /// (`serverFlag` names that flag in errors, e.g. `--curve-coordinator-public`).
    public static func client(secretFile: String?, publicFile: String?, serverPublicFile: String?,
                              serverFlag: String = "--curve-server-public") throws -> ZMQSecurity {
        let given = [("--curve-secret", secretFile), ("--curve-public", publicFile), (serverFlag, serverPublicFile)]
        guard let keys = try keyPair(given, secretFile: secretFile, publicFile: publicFile), let serverPublicFile else { return .none }
        let serverKey = try CurveKeyPair.loadPublicKey(file: URL(fileURLWithPath: serverPublicFile))
        return try .curveClient(keys: keys, serverPublicKey: serverKey)
    }

    /// The role's key pair when every flag is given, nil when none is; throws on a partial set.
    private static func keyPair(_ given: [(String, String?)], secretFile: String?, publicFile: String?) throws -> CurveKeyPair? {
        let missing = given.filter { $0.1 == nil }.map(\.0)
        if missing.count == given.count { return nil }
        guard missing.isEmpty, let secretFile, let publicFile else {
            let present = given.filter { $0.1 != nil }.map(\.0)
            throw ZMQSecurityError.incompleteCurveFlags(
                "CURVE needs \(given.map(\.0).joined(separator: ", ")) together; got \(present.joined(separator: ", ")) without \(missing.joined(separator: ", "))")
        }
        return try CurveKeyPair.load(publicFile: URL(fileURLWithPath: publicFile), secretFile: URL(fileURLWithPath: secretFile))
    }
}
