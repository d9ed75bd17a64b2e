import Foundation

/// The dataset selection the coordinator and every worker must agree on, as command-line flags.
public struct DatasetArguments: Equatable, Sendable {
    public var data: String
    public var format: String?
    public var split: String?
    public var limit: Int?

    public init(data: String, format: String? = nil, split: String? = nil, limit: Int? = nil) {
        self.data = data
        self.format = format
        self.split = split
        self.limit = limit
    }

    /// `--data D [--format F] [--split S] [--limit N]`.
    public var arguments: [String] {
        var result = ["--data", data]
        if let format { result += ["--format", format] }
        if let split { result += ["--split", split] }
        if let limit { result += ["--limit", String(limit)] }
        return result
    }
}

/// How a role's sockets are secured on its command line: a key folder (the default everywhere) or
/// explicit loopback plaintext (tests of the plaintext path only).
public enum RoleSecurityArguments: Equatable, Sendable {
    /// `--keys DIR`.
    case keys(String)
    /// `--insecure-plaintext`.
    case insecurePlaintext

    var arguments: [String] {
        switch self {
        case .keys(let directory): return ["--keys", directory]
        case .insecurePlaintext: return ["--insecure-plaintext"]
        }
    }
}

/// One role's `featstream` command line, typed: `featstream run`, `featstream launch` (and its
/// `--dry-run`), the cluster tests and the shipped Ops files all start roles through this one
/// builder (the Ops files are checked against `flags(of:)` by a test), so a flag is spelled in one place.
public enum RoleCommand: Equatable, Sendable {
    case coordinator(Coordinator)
    case head(Head)
    case worker(Worker)

    /// The coordinator's flags.
    public struct Coordinator: Equatable, Sendable {
        public var bind: String
        public var headAddress: String
        public var dataset: DatasetArguments
        public var journal: String
        public var security: RoleSecurityArguments
        public var shardSize: Int?
        /// `--lease-ms`, `--heartbeat-ms`, ... by flag name.
        public var tuning: [String: Int] = [:]
        public var metricsPort: Int?

        public init(bind: String, headAddress: String, dataset: DatasetArguments, journal: String, security: RoleSecurityArguments) {
            self.bind = bind
            self.headAddress = headAddress
            self.dataset = dataset
            self.journal = journal
            self.security = security
        }
    }

    /// The head's flags.
    public struct Head: Equatable, Sendable {
        public var bind: String
        public var coordinator: String
        public var store: String
        public var security: RoleSecurityArguments
        public var model: String?
        /// `--feature-dimension`: the job model's row width, when the launcher knows it (else the head reads `model`).
        public var featureDimension: Int?
        /// The coordinator's dataset selection: the head indexes it the same way for class names and the
        /// dataset's own validation split.
        public var data: DatasetArguments?
        public var dtype: String?
        public var credits: Int?
        public var trainOut: String?
        public var metricsPort: Int?
        /// Training flags (`--l2`, `--mlp`, ...), passed through as given.
        public var training: [String] = []

        public init(bind: String, coordinator: String, store: String, security: RoleSecurityArguments) {
            self.bind = bind
            self.coordinator = coordinator
            self.store = store
            self.security = security
        }
    }

    /// A worker's flags.
    public struct Worker: Equatable, Sendable {
        public var coordinator: String
        public var model: String
        public var name: String
        public var security: RoleSecurityArguments
        /// The key in the folder (`workers/KEY.key`); nil means the key is named like the worker.
        public var keyName: String?
        public var threads: Int?
        public var batch: Int?
        public var dtype: String?
        /// fp32 or int8 (`--precision`); nil keeps the model config's.
        public var precision: String?
        public var metricsPort: Int?
        /// `--path-map FROM=TO`: where this host sees the coordinator's dataset folder, when elsewhere.
        public var pathMap: String?
        /// `--stall-after SECONDS`: how long an extraction may produce no batch before the worker exits.
        public var stallAfter: Int?

        public init(coordinator: String, model: String, name: String, security: RoleSecurityArguments) {
            self.coordinator = coordinator
            self.model = model
            self.name = name
            self.security = security
        }
    }

    /// The subcommand and its flags, without the binary.
    public var arguments: [String] {
        switch self {
        case .coordinator(let c):
            var result = ["coordinator", "--bind", c.bind, "--head", c.headAddress] + c.dataset.arguments + ["--journal", c.journal]
            if let shardSize = c.shardSize { result += ["--shard-size", String(shardSize)] }
            for flag in c.tuning.keys.sorted() { result += [flag, String(c.tuning[flag]!)] }
            if let port = c.metricsPort { result += ["--metrics-port", String(port)] }
            return result + c.security.arguments
        case .head(let h):
            var result = ["head", "--bind", h.bind, "--coordinator", h.coordinator, "--store", h.store]
            if let model = h.model { result += ["--model", model] }
            if let width = h.featureDimension { result += ["--feature-dimension", String(width)] }
            if let data = h.data { result += data.arguments }
            if let dtype = h.dtype { result += ["--dtype", dtype] }
            if let credits = h.credits { result += ["--credits", String(credits)] }
            if let trainOut = h.trainOut { result += ["--train-out", trainOut] + h.training }
            if let port = h.metricsPort { result += ["--metrics-port", String(port)] }
            return result + h.security.arguments
        case .worker(let w):
            var result = ["worker", "--coordinator", w.coordinator, "--model", w.model, "--name", w.name]
            if let keyName = w.keyName { result += ["--key-name", keyName] }
            if let threads = w.threads { result += ["--threads", String(threads)] }
            if let batch = w.batch { result += ["--batch", String(batch)] }
            if let dtype = w.dtype { result += ["--dtype", dtype] }
            if let precision = w.precision { result += ["--precision", precision] }
            if let port = w.metricsPort { result += ["--metrics-port", String(port)] }
            if let pathMap = w.pathMap { result += ["--path-map", pathMap] }
            if let stallAfter = w.stallAfter { result += ["--stall-after", String(stallAfter)] }
            return result + w.security.arguments
        }
    }

    /// `coordinator`, `head` or `worker`.
    public var subcommand: String { arguments[0] }

    /// Every flag the builder can emit for `subcommand` (plus the role's own options that deployment
    /// files may set, like `--metrics-bind`), for checking hand-written deployment files against it.
    public static func flags(of subcommand: String) -> Set<String> {
        let common: Set<String> = ["--keys", "--insecure-plaintext", "--allow-remote-plaintext", "--metrics-port", "--metrics-bind"]
        let dataset: Set<String> = ["--data", "--format", "--split", "--limit"]
        switch subcommand {
        case "coordinator":
            return common.union(dataset).union(["--bind", "--head", "--journal", "--shard-size", "--lease-ms", "--heartbeat-ms",
                                                "--dead-after-beats", "--commit-wait-ms", "--stall-ms"])
        case "head":
            return common.union(dataset).union(["--bind", "--coordinator", "--store", "--model", "--feature-dimension", "--dtype", "--credits",
                                 "--train-out", "--l2", "--hidden", "--max-epochs", "--validation-fraction", "--mlp", "--balanced"])
        case "worker":
            return common.union(["--coordinator", "--model", "--name", "--key-name", "--threads", "--batch",
                                 "--dtype", "--decode-threads", "--precision", "--path-map"])
        default:
            return []
        }
    }
}

/// A fresh private folder for one job's transient files (ephemeral keys, pid files): `mkdtemp` under
/// `$XDG_RUNTIME_DIR` (a per-user tmpfs) or else `~/.cache`, mode 0700, never in the shared `/tmp`.
public func makePrivateRunDirectory(prefix: String = "featstream-run") throws -> URL {
    let environment = ProcessInfo.processInfo.environment
    let base = environment["XDG_RUNTIME_DIR"].flatMap { $0.isEmpty ? nil : $0 }
        ?? ((environment["HOME"] ?? NSHomeDirectory()) as NSString).appendingPathComponent(".cache")
    if !FileManager.default.fileExists(atPath: base) {
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
    }
    var template = Array((base as NSString).appendingPathComponent("\(prefix).XXXXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else {
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: base, NSLocalizedDescriptionKey: "mkdtemp under \(base): errno \(errno)"])
    }
    // mkdtemp creates 0700 already; chmod makes it exact whatever the umask.
    chmod(made, 0o700)
    return URL(fileURLWithPath: String(cString: made), isDirectory: true)
}
