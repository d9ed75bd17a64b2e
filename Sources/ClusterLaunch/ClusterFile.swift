import Foundation
import TOMLKit

/// A mistake in a cluster definition file, located precisely enough to fix without guessing.
public struct ClusterFileError: Error, CustomStringConvertible, Equatable {
    /// The file as it was named to `ClusterFile.parse(path:)`.
    public let file: String
    /// 1-based line of the offending text; 0 when the mistake is an absence (a missing table).
    public let line: Int
    /// The key (as `table.key`) or table the mistake is about, when there is one.
    public let key: String?
    /// What is wrong, in words meant for the person editing the file.
    public let message: String

    /// Builds an error; `line` 0 means "the file as a whole".
    public init(file: String, line: Int, key: String?, message: String) {
        self.file = file
        self.line = line
        self.key = key
        self.message = message
    }

    /// `file:line: key: message`, the shape editors and terminals turn into a link.
    public var description: String {
        let place = line > 0 ? "\(file):\(line)" : file
        return key.map { "\(place): \($0): \(message)" } ?? "\(place): \(message)"
    }
}

/// A value a cluster file can hold; anything richer (floats, dates, inline tables) is refused.
public enum ClusterValue: Equatable, Sendable {
    /// A basic ("...") or literal ('...') string, after escapes and `${VAR}` expansion.
    case string(String)
    /// A decimal integer.
    case int(Int)
    /// `true` or `false`.
    case bool(Bool)
    /// A one-line array of strings.
    case strings([String])

    var typeName: String {
        switch self {
        case .string: return "a string"
        case .int: return "an integer"
        case .bool: return "a boolean"
        case .strings: return "an array of strings"
        }
    }
}

/// How to reach the hosts: the OpenSSH client and the options it is given.
public struct SSHSettings: Equatable, Sendable {
    /// The ssh binary; OpenSSH's client, never a home-made transport.
    public var executable = "/usr/bin/ssh"
    /// An ssh_config(5) file passed with `-F`; nil uses the user's defaults.
    public var configFile: String?
    /// Remote login name (`-l`); nil leaves it to the config or the destination.
    public var user: String?
    /// Seconds before a connection attempt counts as failed.
    public var connectTimeout = 5
    /// Extra `-o` options, each `Name=value`.
    public var options: [String] = []
}

/// Where a role runs and how others find it.
public struct HostPlacement: Equatable, Sendable {
    /// The ssh destination (an alias from the ssh config, `host`, or `user@host`).
    public var sshDestination: String
    /// The address other roles use to reach this host (a name or IP on the cluster network).
    public var address: String
    /// The featstream binary on that host.
    public var featstream: String
}

/// The coordinator: binds the control port that workers and the head connect to.
public struct CoordinatorSpec: Equatable, Sendable {
    /// Where it runs.
    public var placement: HostPlacement
    /// Interface to bind (`0.0.0.0` accepts on every interface of the host).
    public var bind: String
    /// Control port.
    public var port: Int
    /// Dataset path on the coordinator's host.
    public var data: String
    /// Journal file on the coordinator's host; resuming needs the same path.
    public var journal: String
    /// Optional tuning passed as `--shard-size`, `--lease-ms`, ... when present.
    public var tuning: [String: Int] = [:]
    /// Passed verbatim after everything else.
    public var extraArguments: [String] = []
}

/// The head: binds the data port the workers stream to, and owns the store.
public struct HeadSpec: Equatable, Sendable {
    /// Where it runs.
    public var placement: HostPlacement
    /// Interface to bind.
    public var bind: String
    /// Data port.
    public var port: Int
    /// Store folder on the head's host.
    public var store: String
    /// Model path on the head's host: it fixes the store's row width (the model's feature node) before any
    /// worker speaks, is recorded in the store, and is what training exports. Required (here or as
    /// `[job] model`), so no first batch can choose the width.
    public var model: String
    /// Dataset path on the head's host (class names and the train/val split).
    public var data: String?
    /// `--dtype` for the store, when set.
    public var dtype: String?
    /// `--credits`, when set.
    public var credits: Int?
    /// `--train-out`, when the head should train once the job is complete.
    public var trainOut: String?
    /// Passed verbatim after everything else.
    public var extraArguments: [String] = []
}

/// One `[[workers]]` table: `count` worker processes on one host.
public struct WorkerGroupSpec: Equatable, Sendable {
    /// Where they run.
    public var placement: HostPlacement
    /// Processes on this host.
    public var count: Int
    /// Model path on this host.
    public var model: String
    /// Dataset path on this host.
    public var data: String
    /// `--threads` per process, when set.
    public var threads: Int?
    /// `--batch`, when set.
    public var batch: Int?
    /// `--dtype` on the wire, when set.
    public var dtype: String?
    /// Passed verbatim after everything else.
    public var extraArguments: [String] = []
}

/// Job-wide settings: the dataset selection every role must agree on, and the launcher's timing.
public struct JobSettings: Equatable, Sendable {
    /// `--format`, when the path alone does not say.
    public var format: String?
    /// `--split` (train or val).
    public var split: String?
    /// `--limit`.
    public var limit: Int?
    /// Folder on every host for the launcher's pid files; nil (the default) makes a private one per role
    /// with `mktemp -d` under `$XDG_RUNTIME_DIR` or `~/.cache`, mode 0700.
    public var runDirectory: String?
    /// A role that exits non-zero within this many seconds failed to start.
    public var startupSeconds = 5
    /// Seconds between SIGTERM and SIGKILL when stopping a role.
    public var stopGraceSeconds = 5
    /// Seconds the head and workers get to finish on their own after the coordinator is done.
    public var finishSeconds = 60
}

/// A whole cluster as a cluster definition file describes it.
public struct ClusterDefinition: Equatable, Sendable {
    /// The file it came from, for messages.
    public var source: String
    /// How to reach the hosts.
    public var ssh: SSHSettings
    /// Job-wide settings.
    public var job: JobSettings
    /// The coordinator.
    public var coordinator: CoordinatorSpec
    /// The head.
    public var head: HeadSpec
    /// The worker groups, in file order.
    public var workers: [WorkerGroupSpec]
    /// The CurveZMQ key folder (`ClusterKeyFolder` layout, made by `featstream keygen --cluster FILE`):
    /// `[keys] dir`, or `FILE.keys` beside the file. Same path on every host; every role runs CurveZMQ.
    public var keysDirectory: String

    /// `tcp://address:port` of the coordinator, as the head and workers dial it.
    public var coordinatorAddress: String { "tcp://\(coordinator.placement.address):\(coordinator.port)" }
    /// `tcp://address:port` of the head, as the workers dial it.
    public var headAddress: String { "tcp://\(head.placement.address):\(head.port)" }
}

/// Reads cluster definition files: TOML 1.0 (parsed by TOMLKit) restricted to what a cluster needs.
/// Tables `[ssh]`, `[job]`, `[keys]`, `[coordinator]`, `[head]`, `[[workers]]`; values are strings,
/// integers, booleans and arrays of strings (floats, dates, inline tables and dotted keys are refused). Strings may name environment variables as `${NAME}` or `${NAME:-default}`, so one file
/// serves machines whose paths differ. Every mistake names the file, the line and the key.
public enum ClusterFile {
    /// Parses and validates the file at `path`.
    public static func parse(path: String) throws -> ClusterDefinition {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ClusterFileError(file: path, line: 0, key: nil, message: "cannot read the file")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw ClusterFileError(file: path, line: 0, key: nil, message: "not UTF-8 text")
        }
        return try parse(text: text, file: path)
    }

    /// Parses `text` as if read from `file` (the name only appears in messages).
    public static func parse(text: String, file: String = "<cluster file>",
                             environment: [String: String] = ProcessInfo.processInfo.environment) throws -> ClusterDefinition {
        let document = try DocumentReader(file: file, environment: environment).read(text)
        return try Schema(file: file, document: document).definition()
    }
}

// MARK: - The document, read by TOMLKit

struct Entry {
    let value: ClusterValue
    let line: Int
}

struct Table {
    let name: String
    let line: Int
    var entries: [String: Entry] = [:]
    var order: [String] = []
}

struct Document {
    var tables: [Table] = []
}

/// Turns TOMLKit's tree into the tables the schema reads, refusing what the cluster file does not use
/// (floats, dates, inline tables, dotted keys, mixed arrays) and expanding `${VAR}` in strings.
struct DocumentReader {
    let file: String
    let environment: [String: String]

    func fail(_ line: Int, _ key: String?, _ message: String) -> ClusterFileError {
        ClusterFileError(file: file, line: line, key: key, message: message)
    }

    func read(_ text: String) throws -> Document {
        let lines = LineIndex(text)
        // Before TOMLKit, whose message for `[workers]` followed by `[[workers]]` points at the wrong line.
        for (line, name, isArray) in lines.headerLines where isArray != (name == "workers") {
            throw fail(line, isArray ? "[[\(name)]]" : "[\(name)]", name == "workers" ? "workers is an array of tables: write [[workers]]"
                                                                                     : "only [[workers]] may repeat; write [\(name)]")
        }
        let root: TOMLTable
        do {
            root = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            let line = Int(error.source.begin.line)
            throw fail(line, lines.keyName(atLine: line), error.description)
        }
        var document = Document()
        // Tables in file order, so the first mistake reported is the first one in the file.
        var pending: [(name: String, occurrence: Int, table: TOMLTable, isArray: Bool)] = []
        for (name, value) in root.sorted(by: { lines.line(of: $0.0) < lines.line(of: $1.0) }) {
            if let table = value.table {
                pending.append((name, 0, table, false))
            } else if let array = value.array, !array.isEmpty, array.allSatisfy({ $0.table != nil }) {
                for (index, element) in array.enumerated() { pending.append((name, index, element.table!, true)) }
            } else {
                throw fail(lines.line(of: name), name,
                           "key outside any table; put it under [ssh], [job], [coordinator], [head] or [[workers]]")
            }
        }
        pending.sort { lines.header($0.name, occurrence: $0.occurrence) < lines.header($1.name, occurrence: $1.occurrence) }
        for (name, occurrence, table, isArray) in pending {
            let headerLine = lines.header(name, occurrence: occurrence)
            if isArray != (name == "workers") {  // an inline `workers = [{...}]` or `head = {...}`
                throw fail(headerLine == 0 ? lines.line(of: name) : headerLine, name, "write [[workers]] tables and single [tables], not inline ones")
            }
            var result = Table(name: name, line: headerLine)
            let keyLines = table.keys.map { (key: $0, line: lines.line(of: $0, in: name, occurrence: occurrence)) }
            for (key, line) in keyLines.sorted(by: { $0.line < $1.line }) {
                result.entries[key] = Entry(value: try value(table[key]!, key: "\(name).\(key)", line: line), line: line)
                result.order.append(key)
            }
            document.tables.append(result)
        }
        return document
    }

    func value(_ node: TOMLValueConvertible, key: String, line: Int) throws -> ClusterValue {
        switch node.type {
        case .string: return .string(try expand(node.string!, line: line, key: key))
        case .int: return .int(node.int!)
        case .bool: return .bool(node.bool!)
        case .array:
            return .strings(try node.array!.map {
                guard let s = $0.string else { throw fail(line, key, "arrays hold only strings") }
                return try expand(s, line: line, key: key)
            })
        case .table: throw fail(line, key, "dotted keys and inline tables are not supported; write plain keys under a [table]")
        default:
            throw fail(line, key, "unsupported value, a \(node.type) (use a quoted string, an integer, true/false or [\"...\"])")
        }
    }

    /// `${NAME}` and `${NAME:-default}`; an unset variable without a default is a mistake, not "".
    func expand(_ text: String, line: Int, key: String) throws -> String {
        guard text.contains("${") else { return text }
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw fail(line, key, "unterminated ${ in \"\(text)\"")
            }
            let body = rest[start.upperBound..<end]
            let name: Substring
            var fallback: Substring?
            if let dash = body.range(of: ":-") {
                name = body[..<dash.lowerBound]
                fallback = body[dash.upperBound...]
            } else {
                name = body
            }
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw fail(line, key, "bad variable reference ${\(body)}")
            }
            if let value = environment[String(name)], !value.isEmpty {
                result += value
            } else if let fallback {
                result += fallback
            } else {
                throw fail(line, key, "environment variable \(name) is not set (write ${\(name):-default} for a default)")
            }
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }
}

/// Where each table header and key sits in the text, for messages only: TOMLKit's tree carries no
/// source positions, so this line scan (headers and `key =` at the start of a line) supplies them.
/// It never decides what the file means; a line it cannot place reports as 0, "the file as a whole".
struct LineIndex {
    /// Header lines of each table name, in file order (several for `[[workers]]`).
    private var headers: [String: [Int]] = [:]
    /// Every header in file order: its line, table name and whether it is `[[...]]`.
    private(set) var headerLines: [(line: Int, name: String, isArray: Bool)] = []
    /// First line of each key, under (table, occurrence); table "" is the top level.
    private var keys: [String: Int] = [:]
    /// The qualified key (`table.key`) or header (`[table]`) each line starts, for syntax errors.
    private var names: [Int: String] = [:]

    init(_ text: String) {
        var table = ""
        var occurrence = 0
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let number = index + 1
            let line = raw.drop { $0 == " " || $0 == "\t" }
            if line.hasPrefix("[") {
                let isArray = line.hasPrefix("[[")
                let name = String(line.drop { $0 == "[" || $0 == " " }.prefix { $0 != "]" && $0 != " " })
                headers[name, default: []].append(number)
                headerLines.append((number, name, isArray))
                table = name
                occurrence = headers[name]!.count - 1
                names[number] = isArray ? "[[\(name)]]" : "[\(name)]"
                continue
            }
            let key = String(line.prefix { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") })
            guard !key.isEmpty else { continue }
            let slot = "\(table)\u{0}\(occurrence)\u{0}\(key)"
            if keys[slot] == nil { keys[slot] = number }
            names[number] = table.isEmpty ? key : "\(table).\(key)"
        }
    }

    /// The line of `[name]` / the `occurrence`-th `[[name]]`.
    func header(_ name: String, occurrence: Int) -> Int { headers[name].flatMap { occurrence < $0.count ? $0[occurrence] : nil } ?? 0 }
    /// The line of `key` in the `occurrence`-th table `table`, or of a top-level key (or table) `key`.
    func line(of key: String, in table: String = "", occurrence: Int = 0) -> Int {
        keys["\(table)\u{0}\(occurrence)\u{0}\(key)"] ?? (table.isEmpty ? header(key, occurrence: 0) : 0)
    }
    /// The key or header that `line` starts, if any.
    func keyName(atLine line: Int) -> String? { names[line] }
}

// MARK: - The schema

struct Schema {
    let file: String
    let document: Document

    static let allowed: [String: Set<String>] = [
        "ssh": ["ssh", "config", "user", "connect_timeout", "options"],
        "keys": ["dir"],
        "job": ["featstream", "model", "data", "format", "split", "limit", "run_dir",
                "startup_seconds", "stop_grace_seconds", "finish_seconds"],
        "coordinator": ["host", "address", "bind", "port", "featstream", "data", "journal", "shard_size", "lease_ms",
                        "heartbeat_ms", "dead_after_beats", "commit_wait_ms", "stall_ms", "args"],
        "head": ["host", "address", "bind", "port", "featstream", "store", "model", "data", "dtype", "credits", "train_out", "args"],
        "workers": ["host", "address", "count", "featstream", "model", "data", "threads", "batch", "dtype", "args"],
    ]

    func fail(_ line: Int, _ key: String?, _ message: String) -> ClusterFileError {
        ClusterFileError(file: file, line: line, key: key, message: message)
    }

    /// Typed access to one table, remembering which keys were read so leftovers can be refused.
    struct View {
        let table: Table?
        let schema: Schema

        var label: String { table.map { $0.name } ?? "" }

        func entry(_ key: String) -> Entry? { table?.entries[key] }

        func string(_ key: String) throws -> String? {
            guard let entry = entry(key) else { return nil }
            guard case .string(let s) = entry.value else { throw typeError(key, entry, "a string") }
            guard !s.isEmpty else { throw schema.fail(entry.line, "\(label).\(key)", "must not be empty") }
            return s
        }

        func int(_ key: String, range: ClosedRange<Int> = 0...Int.max) throws -> Int? {
            guard let entry = entry(key) else { return nil }
            guard case .int(let n) = entry.value else { throw typeError(key, entry, "an integer") }
            guard range.contains(n) else {
                throw schema.fail(entry.line, "\(label).\(key)", "\(n) is out of range \(range.lowerBound)...\(range.upperBound)")
            }
            return n
        }

        func strings(_ key: String) throws -> [String]? {
            guard let entry = entry(key) else { return nil }
            guard case .strings(let s) = entry.value else { throw typeError(key, entry, "an array of strings") }
            return s
        }

        /// `curve_allow` may be one path or several.
        func stringOrStrings(_ key: String) throws -> [String]? {
            guard let entry = entry(key) else { return nil }
            switch entry.value {
            case .string(let s): return [s]
            case .strings(let s): return s
            default: throw typeError(key, entry, "a string or an array of strings")
            }
        }

        func required<T>(_ value: T?, _ key: String) throws -> T {
            if let value { return value }
            throw schema.fail(table?.line ?? 0, "\(label).\(key)", "required key is missing")
        }

        func typeError(_ key: String, _ entry: Entry, _ expected: String) -> ClusterFileError {
            schema.fail(entry.line, "\(label).\(key)", "expected \(expected), found \(entry.value.typeName)")
        }
    }

    func definition() throws -> ClusterDefinition {
        for table in document.tables {
            guard let keys = Schema.allowed[table.name] else {
                throw fail(table.line, "[\(table.name)]", "unknown table (expected [ssh], [job], [keys], [coordinator], [head] or [[workers]])")
            }
            for key in table.order where !keys.contains(key) {
                throw fail(table.entries[key]!.line, "\(table.name).\(key)",
                           "unknown key (allowed: \(keys.sorted().joined(separator: ", ")))")
            }
        }
        func single(_ name: String) -> View { View(table: document.tables.first { $0.name == name }, schema: self) }
        func requireTable(_ name: String) throws -> View {
            let view = single(name)
            guard view.table != nil else { throw fail(0, "[\(name)]", "required table is missing") }
            return view
        }

        let sshView = single("ssh")
        var ssh = SSHSettings()
        if let executable = try sshView.string("ssh") { ssh.executable = executable }
        ssh.configFile = try sshView.string("config")
        ssh.user = try sshView.string("user")
        if let timeout = try sshView.int("connect_timeout", range: 1...600) { ssh.connectTimeout = timeout }
        ssh.options = try sshView.strings("options") ?? []
        // Everything below reaches ssh's command line: refuse what ssh could read as an option or a command.
        for (key, value) in [("ssh", ssh.executable), ("config", ssh.configFile)] {
            if let value, let problem = SSHField.pathProblem(value) { throw fail(sshView.entry(key)!.line, "ssh.\(key)", problem) }
        }
        if let user = ssh.user, let problem = SSHField.userProblem(user) { throw fail(sshView.entry("user")!.line, "ssh.user", problem) }
        for option in ssh.options {
            if let problem = SSHField.optionProblem(option) { throw fail(sshView.entry("options")!.line, "ssh.options", problem) }
        }

        let jobView = single("job")
        var job = JobSettings()
        job.format = try jobView.string("format")
        if let format = job.format, !["imagefolder", "webdataset", "manifest"].contains(format), let e = jobView.entry("format") {
            throw fail(e.line, "job.format", "'\(format)' is not one of imagefolder, webdataset, manifest")
        }
        job.split = try jobView.string("split")
        if let split = job.split, !["train", "val"].contains(split), let e = jobView.entry("split") {
            throw fail(e.line, "job.split", "'\(split)' is not train or val")
        }
        job.limit = try jobView.int("limit", range: 1...Int.max)
        job.runDirectory = try jobView.string("run_dir")
        if let s = try jobView.int("startup_seconds", range: 0...600) { job.startupSeconds = s }
        if let s = try jobView.int("stop_grace_seconds", range: 0...600) { job.stopGraceSeconds = s }
        if let s = try jobView.int("finish_seconds", range: 0...86_400) { job.finishSeconds = s }
        let defaultBinary = try jobView.string("featstream")
        let defaultModel = try jobView.string("model")
        let defaultData = try jobView.string("data")

        func placement(_ view: View) throws -> HostPlacement {
            let host = try view.required(try view.string("host"), "host")
            if let problem = SSHField.hostProblem(host) { throw fail(view.entry("host")!.line, "\(view.label).host", problem) }
            if let address = try view.string("address"), let problem = SSHField.hostProblem(address) {
                throw fail(view.entry("address")!.line, "\(view.label).address", problem)
            }
            // A destination like user@host names the address too; an ssh alias needs `address`.
            let implied = host.split(separator: "@").last.map(String.init) ?? host
            guard let binary = try view.string("featstream") ?? defaultBinary else {
                throw fail(view.table?.line ?? 0, "\(view.label).featstream", "required key is missing (set it here or in [job])")
            }
            return HostPlacement(sshDestination: host, address: try view.string("address") ?? implied, featstream: binary)
        }
        func fallback(_ view: View, _ key: String, _ value: String?) throws -> String {
            guard let value else { throw fail(view.table?.line ?? 0, "\(view.label).\(key)", "required key is missing (set it here or in [job])") }
            return value
        }

        let c = try requireTable("coordinator")
        var coordinator = CoordinatorSpec(
            placement: try placement(c), bind: try c.string("bind") ?? "0.0.0.0",
            port: try c.required(try c.int("port", range: 1...65_535), "port"),
            data: try fallback(c, "data", try c.string("data") ?? defaultData),
            journal: try c.required(try c.string("journal"), "journal"))
        for (key, flag) in [("shard_size", "--shard-size"), ("lease_ms", "--lease-ms"), ("heartbeat_ms", "--heartbeat-ms"),
                            ("dead_after_beats", "--dead-after-beats"), ("commit_wait_ms", "--commit-wait-ms"), ("stall_ms", "--stall-ms")] {
            if let n = try c.int(key, range: 1...Int.max) { coordinator.tuning[flag] = n }
        }
        coordinator.extraArguments = try c.strings("args") ?? []

        let h = try requireTable("head")
        // The head's model fixes the store's width at start; without it the first batch a worker sent would.
        guard let headModel = try h.string("model") ?? defaultModel else {
            throw fail(h.table?.line ?? 0, "head.model", "required key is missing (set it here or in [job]): the head reads the job's "
                       + "model on its own host to fix the store's feature width before any worker connects")
        }
        var head = HeadSpec(placement: try placement(h), bind: try h.string("bind") ?? "0.0.0.0",
                            port: try h.required(try h.int("port", range: 1...65_535), "port"),
                            store: try h.required(try h.string("store"), "store"), model: headModel)
        head.data = try h.string("data") ?? defaultData
        head.dtype = try h.string("dtype")
        head.credits = try h.int("credits", range: 1...1_000_000)
        head.trainOut = try h.string("train_out")
        head.extraArguments = try h.strings("args") ?? []

        // Two listeners on one host and port cannot both bind.
        if c.table != nil, coordinator.placement.address == head.placement.address, coordinator.port == head.port {
            throw fail(h.entry("port")!.line, "head.port",
                       "duplicate host/port: the coordinator already listens on \(head.placement.address):\(head.port) (line \(c.entry("port")!.line))")
        }

        var workers: [WorkerGroupSpec] = []
        var seenHosts: [String: Int] = [:]
        for table in document.tables where table.name == "workers" {
            let w = View(table: table, schema: self)
            let place = try placement(w)
            if let earlier = seenHosts[place.sshDestination] {
                throw fail(w.entry("host")!.line, "workers.host",
                           "duplicate host '\(place.sshDestination)' (already in [[workers]] on line \(earlier)); use count for several workers on one host")
            }
            seenHosts[place.sshDestination] = table.line
            var group = WorkerGroupSpec(placement: place, count: try w.int("count", range: 1...1024) ?? 1,
                                        model: try fallback(w, "model", try w.string("model") ?? defaultModel),
                                        data: try fallback(w, "data", try w.string("data") ?? defaultData))
            group.threads = try w.int("threads", range: 1...1024)
            group.batch = try w.int("batch", range: 1...65_536)
            group.dtype = try w.string("dtype")
            group.extraArguments = try w.strings("args") ?? []
            workers.append(group)
        }
        guard !workers.isEmpty else { throw fail(0, "[[workers]]", "at least one [[workers]] table is required") }

        // Relative paths would differ between hosts; the default sits beside the cluster file.
        let keys = try single("keys").string("dir") ?? (file + ".keys")
        let absoluteKeys = keys.hasPrefix("/") ? keys : FileManager.default.currentDirectoryPath + "/" + keys
        return ClusterDefinition(source: file, ssh: ssh, job: job, coordinator: coordinator, head: head, workers: workers,
                                 keysDirectory: (absoluteKeys as NSString).standardizingPath)
    }
}
