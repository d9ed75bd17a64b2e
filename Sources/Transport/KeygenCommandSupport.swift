import Foundation

/// What `featstream keygen --out DIR --name NAME` made: where the files are and the public key to hand to peers.
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

/// Why a role may not start with the security it was given.
public struct RoleSecurityError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// Every socket's security for each role, from `--keys DIR` or the explicit plaintext flags.
///
/// The rule, in one place: CURVE unless `--insecure-plaintext`; plaintext only on loopback endpoints
/// unless `--allow-remote-plaintext` as well. Without keys and without the flag a role refuses to start.
public struct RoleSecurity: Sendable {
    /// The key folder (`--keys`), or nil for plaintext.
    public let keys: ClusterKeyFolder?
    /// A warning to print loudly when plaintext was chosen; nil with CURVE.
    public let plaintextWarning: String?

    /// Resolves the flags of `role`; `endpoints` are the addresses it binds or dials (checked for loopback).
    public init(role: String, keysDirectory: String?, insecurePlaintext: Bool, allowRemotePlaintext: Bool, endpoints: [String]) throws {
        if let keysDirectory {
            guard !insecurePlaintext else { throw RoleSecurityError("--keys and --insecure-plaintext contradict each other; give one") }
            keys = ClusterKeyFolder(path: keysDirectory)
            plaintextWarning = nil
            return
        }
        guard insecurePlaintext else {
            throw RoleSecurityError("""
                no CURVE keys: give --keys DIR (make one with `featstream keygen --keys DIR --workers w0,w1`, or \
                `featstream keygen --cluster FILE` for a cluster file), or --insecure-plaintext to run unencrypted on loopback
                """)
        }
        let remote = endpoints.filter { !isLoopbackEndpoint($0) }
        if !remote.isEmpty && !allowRemotePlaintext {
            throw RoleSecurityError("--insecure-plaintext is refused for \(remote.joined(separator: ", ")), which is not a loopback address; "
                                    + "anyone on that network could lease, commit or shut down the job. Use --keys DIR, "
                                    + "or add --allow-remote-plaintext if you really mean it")
        }
        keys = nil
        plaintextWarning = "WARNING: \(role) runs WITHOUT encryption or authentication (--insecure-plaintext"
            + (remote.isEmpty ? ", loopback only" : ", --allow-remote-plaintext on \(remote.joined(separator: ", "))")
            + "): any local process can impersonate any role"
    }

    /// The coordinator's control socket: a CURVE server admitting the head's key and every worker key.
    public func coordinatorControl() throws -> ZMQSecurity {
        guard let keys else { return .none }
        return try .curveServer(keys: keys.pair(.coordinator), peers: keys.peers(admittedBy: .coordinator))
    }

    /// The head's data socket (a CURVE server admitting worker keys) and its control socket (a client of the coordinator).
    public func head() throws -> (data: ZMQSecurity, control: ZMQSecurity) {
        guard let keys else { return (.none, .none) }
        let pair = try keys.pair(.head)
        return (try .curveServer(keys: pair, peers: keys.peers(admittedBy: .head)),
                try .curveClient(keys: pair, serverPublicKey: keys.publicKey(.coordinator), serverRole: .coordinator))
    }

    /// A worker's control socket (client of the coordinator) and data socket (client of the head), with key `name`.
    public func worker(keyName name: String) throws -> (control: ZMQSecurity, data: ZMQSecurity) {
        guard let keys else { return (.none, .none) }
        let pair = try keys.pair(.worker(name))
        return (try .curveClient(keys: pair, serverPublicKey: keys.publicKey(.coordinator), serverRole: .coordinator),
                try .curveClient(keys: pair, serverPublicKey: keys.publicKey(.head), serverRole: .head))
    }
}

/// True when `endpoint` (`tcp://host:port`, or a bare host) names a loopback address; `*`, `0.0.0.0`
/// and every other host are not loopback. `inproc://` and `ipc://` never leave the machine.
public func isLoopbackEndpoint(_ endpoint: String) -> Bool {
    if endpoint.hasPrefix("inproc://") || endpoint.hasPrefix("ipc://") { return true }
    var host = endpoint.hasPrefix("tcp://") ? String(endpoint.dropFirst(6)) : endpoint
    if host.hasPrefix("[") {
        host = String(host.dropFirst().prefix { $0 != "]" })
    } else if let colon = host.lastIndex(of: ":") {
        host = String(host[..<colon])
    }
    if host == "localhost" || host == "::1" { return true }
    let octets = host.split(separator: ".", omittingEmptySubsequences: false)
    return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
}
