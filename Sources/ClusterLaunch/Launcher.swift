import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// One process the launcher will start: which host, under which label, with which command line.
public struct PlannedRole: Equatable, Sendable {
    /// `coordinator`, `head` or `workerN` (numbered across the whole cluster, from 1).
    public var label: String
    /// The ssh destination.
    public var host: String
    /// The featstream command line on that host, binary first.
    public var command: [String]
    /// Folders that must exist on the host before the role starts (the journal's, the store's parent).
    public var directories: [String]
    /// A worker's key name in the cluster's key folder (`workers/NAME`); nil for the coordinator and head.
    public var keyName: String? = nil
}

/// What became of one role, for the closing table.
public struct RoleOutcome: Equatable, Sendable {
    /// The role's plan.
    public var role: PlannedRole
    /// The remote process id (also its process group id), once the host reported it.
    public var pid: Int?
    /// The remote exit status as ssh relayed it (255 means ssh itself failed); nil if it never ran.
    public var status: Int32?
    /// Whether the launcher had to stop it (as opposed to it ending by itself).
    public var stoppedByLauncher: Bool
    /// False when the launcher stopped it but could not confirm the remote process group is gone.
    public var confirmedGone: Bool
}

/// Starts a cluster definition's coordinator, head and workers on their hosts through the OpenSSH
/// client, streams their output, and stops every one of them again.
///
/// Each role runs remotely as `setsid sh -c 'echo $$ > PIDFILE; exec featstream ...'`, so the role
/// is a process group the launcher can signal as a whole with `kill -TERM -PGID` over a second ssh
/// connection. No tty is involved; instead the remote wrapper watches the session's stdin, which
/// only the launcher holds open: if the launcher dies without cleaning up, the stdin reaches EOF and
/// the wrapper kills the group itself. Hence no remote orphans in either case.
public final class Launcher: @unchecked Sendable {
    /// The cluster being launched.
    public let definition: ClusterDefinition
    /// Every role in start order: coordinator, head, then workers.
    public let roles: [PlannedRole]
    /// Distinguishes this launch's pid files from any other launch sharing a run directory.
    public let launchID: String

    private let outputLock = NSLock()
    private let stateLock = NSLock()
    private var interruptedBy: Int32?
    private var lastProgress: String?
    private var signalSources: [DispatchSourceSignal] = []

    /// Plans the roles; nothing touches the network until `run()`.
    public init(definition: ClusterDefinition) {
        self.definition = definition
        self.roles = Launcher.plan(definition)
        self.launchID = "\(getpid())-\(Int(Date().timeIntervalSince1970))"
    }

    /// The command line of every role, derived from the definition alone (so it is testable without hosts).
    /// Every role runs CurveZMQ with the cluster's key folder; worker N uses key `workers/workerN`.
    public static func plan(_ d: ClusterDefinition) -> [PlannedRole] {
        let dataset = { (path: String) in DatasetArguments(data: path, format: d.job.format, split: d.job.split, limit: d.job.limit) }
        let parent = { (path: String) in (path as NSString).deletingLastPathComponent }
        let security = RoleSecurityArguments.keys(d.keysDirectory)

        let c = d.coordinator
        var coordinator = RoleCommand.Coordinator(bind: "tcp://\(c.bind):\(c.port)", headAddress: d.headAddress,
                                                  dataset: dataset(c.data), journal: c.journal, security: security)
        coordinator.tuning = c.tuning

        let h = d.head
        var head = RoleCommand.Head(bind: "tcp://\(h.bind):\(h.port)", coordinator: d.coordinatorAddress, store: h.store, security: security)
        head.model = h.model
        head.data = h.data.map(dataset)
        head.dtype = h.dtype
        head.credits = h.credits
        head.trainOut = h.trainOut

        var result = [
            PlannedRole(label: "coordinator", host: c.placement.sshDestination,
                        command: [c.placement.featstream] + RoleCommand.coordinator(coordinator).arguments + c.extraArguments,
                        directories: [parent(c.journal)].filter { !$0.isEmpty }),
            PlannedRole(label: "head", host: h.placement.sshDestination,
                        command: [h.placement.featstream] + RoleCommand.head(head).arguments + h.extraArguments,
                        directories: [parent(h.store)].filter { !$0.isEmpty }),
        ]
        var number = 0
        for group in d.workers {
            for _ in 0..<group.count {
                number += 1
                var worker = RoleCommand.Worker(coordinator: d.coordinatorAddress, model: group.model,
                                                name: "worker\(number)@\(group.placement.sshDestination)", security: security)
                worker.keyName = "worker\(number)"
                worker.threads = group.threads
                worker.batch = group.batch
                worker.dtype = group.dtype
                // A host that mounts the corpus elsewhere reads the coordinator's locator paths under its own folder.
                if group.data != c.data { worker.pathMap = "\(datasetFolder(c.data))=\(datasetFolder(group.data))" }
                var role = PlannedRole(label: "worker\(number)", host: group.placement.sshDestination,
                                       command: [group.placement.featstream] + RoleCommand.worker(worker).arguments + group.extraArguments,
                                       directories: [])
                role.keyName = worker.keyName
                result.append(role)
            }
        }
        return result
    }

    // MARK: Running

    /// Checks every host, starts every role, waits for the job and stops everything.
    /// Returns the exit status for the `launch` command: 0 only when the job completed.
    public func run() -> Int32 {
        let start = Date()
        say("cluster \(definition.source): coordinator \(definition.coordinatorAddress) on \(definition.coordinator.placement.sshDestination), "
            + "head \(definition.headAddress) on \(definition.head.placement.sshDestination), "
            + "\(roles.count - 2) worker(s) on \(orderedUnique(roles.dropFirst(2).map(\.host)).joined(separator: ", "))")
        if let problem = checkHosts() {
            say("\(problem); nothing was started")
            return 2
        }
        installSignalHandlers()
        defer { removeSignalHandlers() }

        var running: [RunningRole] = []
        var failure: String?
        for role in roles {
            if let signal = interrupted() { failure = "interrupted by signal \(signal) while starting"; break }
            let remote = RunningRole(role: role, launcher: self)
            do {
                try remote.start()
                running.append(remote)
            } catch {
                failure = "cannot start ssh for \(role.label) on \(role.host): \(error)"
                break
            }
        }
        if failure == nil { failure = watch(&running) }
        let completed = failure == nil
        teardown(running)
        let outcomes = running.map(\.outcome) + roles.dropFirst(running.count).map {
            RoleOutcome(role: $0, pid: nil, status: nil, stoppedByLauncher: false, confirmedGone: true)
        }
        let orphans = outcomes.filter { !$0.confirmedGone }
        summarize(outcomes)
        let seconds = String(format: "%.1f", Date().timeIntervalSince(start))
        if let progress = stateLock.withLock({ lastProgress }) { say("last progress: \(progress)") }
        if !orphans.isEmpty {
            say("could not confirm that these stopped: "
                + orphans.map { "\($0.role.label) on \($0.role.host) (pid \($0.pid.map(String.init) ?? "?"))" }.joined(separator: ", "))
        }
        if let failure {
            say("FAILED after \(seconds) s: \(failure)")
            return interrupted() != nil ? 130 : 1
        }
        if !orphans.isEmpty { return 1 }
        say("job complete in \(seconds) s")
        return completed ? 0 : 1
    }

    /// Every host must answer `ssh HOST true` (and have its featstream binary) before anything starts.
    func checkHosts() -> String? {
        var binaries: [String: [String]] = [:]
        for role in roles where !(binaries[role.host]?.contains(role.command[0]) ?? false) {
            binaries[role.host, default: []].append(role.command[0])
        }
        let hosts = orderedUnique(roles.map(\.host))
        let needed = binaries
        let results = Problems()
        let group = DispatchGroup()
        for host in hosts {
            group.enter()
            Thread.detachNewThread { [self] in
                let reachable = self.ssh(host, "true", timeout: Double(self.definition.ssh.connectTimeout) + 10)
                var problem: String?
                if reachable.status != 0 {
                    let roleNames = self.roles.filter { $0.host == host }.map(\.label).joined(separator: ", ")
                    let why = lastLine(reachable.output) ?? "ssh exited with \(reachable.status)"
                    problem = "host \(host) (\(roleNames)) is unreachable: \(why)"
                } else {
                    let test = needed[host, default: []].map { "test -x \(shellQuote($0)) || { echo \(shellQuote("no executable \($0)")) >&2; exit 3; }" }
                    let check = self.ssh(host, test.joined(separator: "; "), timeout: Double(self.definition.ssh.connectTimeout) + 10)
                    if check.status != 0 {
                        problem = "host \(host): " + (lastLine(check.output) ?? "featstream check failed (\(check.status))")
                    }
                }
                results.set(host, problem)
                group.leave()
            }
        }
        group.wait()
        for host in hosts {
            if let problem = results.get(host) { return problem }
        }
        return nil
    }

    /// Waits for the job; returns nil when it completed, else why it did not. A worker that fails after the
    /// start-up window (a poison item crashed or hung it, PROTOCOL.md §8.3.7) is started again, with backoff;
    /// `running` then holds its new session.
    private func watch(_ running: inout [RunningRole]) -> String? {
        let startedAt = Date()
        let coordinator = running[0], head = running[1]
        var restarts = WorkerRestarts(count: running.count)
        while true {
            if let signal = interrupted() { return "interrupted by signal \(signal)" }
            let inStartup = Date().timeIntervalSince(startedAt) < Double(definition.job.startupSeconds)
            for (slot, role) in running.enumerated() {
                guard let status = role.exitStatus, status != 0 else { continue }
                if inStartup { return "\(role.role.label) on \(role.role.host) failed to start (\(describe(status)))" }
                if role === coordinator || role === head { return "\(role.role.label) on \(role.role.host) exited (\(describe(status)))" }
                guard restarts.due(slot, restartable: true) else { continue }
                say("\(role.role.label) on \(role.role.host) exited (\(describe(status))); starting it again")
                let again = RunningRole(role: role.role, launcher: self)
                do {
                    try again.start()
                    running[slot] = again
                    restarts.started(slot)
                } catch {
                    return "cannot start ssh again for \(role.role.label) on \(role.role.host): \(error)"
                }
            }
            let workers = running.dropFirst(2)
            if let status = coordinator.exitStatus, status == 0 {
                say("the coordinator finished; waiting up to \(definition.job.finishSeconds) s for the head and workers")
                let deadline = Date().addingTimeInterval(Double(definition.job.finishSeconds))
                while running.contains(where: { $0.exitStatus == nil }) && Date() < deadline && interrupted() == nil {
                    Thread.sleep(forTimeInterval: 0.1)
                }
                if let status = head.exitStatus {
                    return status == 0 ? nil : "head on \(head.role.host) exited (\(describe(status)))"
                }
                return interrupted().map { "interrupted by signal \($0)" }
                    ?? "head on \(head.role.host) did not finish within \(definition.job.finishSeconds) s of the coordinator"
            }
            // The coordinator waits forever for workers; with none left the job cannot finish.
            if restarts.everyWorkerGone(noneRunning: workers.allSatisfy { $0.exitStatus != nil }) {
                return "every worker is gone and the job is not complete"
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
    }

    /// Stops whatever still runs: SIGTERM to each remote process group, SIGKILL after the grace period.
    private func teardown(_ running: [RunningRole]) {
        let alive = running.filter { $0.exitStatus == nil }
        if !alive.isEmpty { say("stopping \(alive.map { "\($0.role.label) on \($0.role.host)" }.joined(separator: ", "))") }
        let group = DispatchGroup()
        for role in alive {
            role.markStopping()
            group.enter()
            Thread.detachNewThread { [self] in
                let grace = self.definition.job.stopGraceSeconds
                let result = self.ssh(role.role.host, self.stopCommand(pidFile: role.effectivePidFile, graceSeconds: grace),
                                      timeout: Double(grace + self.definition.ssh.connectTimeout) + 10)
                role.setConfirmedGone(result.status == 0)
                if result.status != 0 {
                    self.say("stopping \(role.role.label) on \(role.role.host): ssh exited \(result.status): \(result.output.trimmingCharacters(in: .whitespacesAndNewlines))")
                }
                group.leave()
            }
        }
        group.wait()
        // Closing stdin is the wrapper's own signal to stop (the safety net when the kill above
        // could not reach the host); it also lets each ssh session end.
        for role in running { role.closeInput() }
        let deadline = Date().addingTimeInterval(Double(definition.job.stopGraceSeconds) + 5)
        while running.contains(where: { $0.exitStatus == nil }) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for role in running where role.exitStatus == nil {
            role.setConfirmedGone(false)
            role.killLocalClient()
        }
        for role in running { role.waitForOutput(seconds: 2) }
    }

    // MARK: Remote commands

    /// The remote side of one role. POSIX sh, run by the login shell of the remote user (so also
    /// dash: `kill -SIG -PGID`, never `kill -SIG -- -PGID`, which dash refuses).
    ///
    /// Files it makes are private (umask 077). Without a `run_dir` the pid file goes into a fresh
    /// `mktemp -d` folder under `$XDG_RUNTIME_DIR` (or `~/.cache`), mode 0700; the pid file itself
    /// is created with the shell's noclobber (`set -C`: O_CREAT|O_EXCL, which never follows a
    /// planted symlink). The wrapper reports the pid file's path with the pid so `stop` finds it.
    func wrapperCommand(_ role: PlannedRole, pidFile: String) -> String {
        let grace = definition.job.stopGraceSeconds
        let directories = role.directories.map(shellQuote).joined(separator: " ")
        let command = role.command.map(shellQuote).joined(separator: " ")
        let makeDirectories = directories.isEmpty ? "" : "mkdir -p -- \(directories) || exit 97\n"
        let pidLine: String
        if definition.job.runDirectory != nil {
            pidLine = "mkdir -p -m 700 -- \(shellQuote((pidFile as NSString).deletingLastPathComponent)) || exit 97\nP=\(shellQuote(pidFile)); rm -f -- \"$P\""
        } else {
            pidLine = """
            b=${XDG_RUNTIME_DIR:-$HOME/.cache}; mkdir -p -m 700 -- "$b" || exit 97
            D=$(mktemp -d "$b/featstream-launch.XXXXXXXX") || exit 97
            P="$D/\(pidFile)"
            """
        }
        return """
        umask 077; \(makeDirectories)\(pidLine)
        echo "@@featstream-launch pidfile $P" >&2
        exec 3<&0
        setsid -w sh -c 'set -C; echo $$ > "$1" || exit 96; shift; exec "$@"' featstream-launch "$P" \(command) </dev/null 3<&- &
        c=$!
        i=0; while [ ! -s "$P" ] && kill -0 $c 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
        echo "@@featstream-launch pid $(cat "$P" 2>/dev/null || echo $c)" >&2
        ( cat <&3 >/dev/null 2>&1; g=$(cat "$P" 2>/dev/null) && [ -n "$g" ] && kill -TERM -"$g" 2>/dev/null && { j=0; while kill -0 -"$g" 2>/dev/null && [ $j -lt \(grace * 10) ]; do sleep 0.1; j=$((j+1)); done; kill -KILL -"$g" 2>/dev/null; }; rm -f -- "$P" ) </dev/null >/dev/null 2>&1 &
        w=$!
        exec 3<&-
        { wait $c; } 2>/dev/null; s=$?
        kill $w 2>/dev/null; rm -f -- "$P"; [ -n "${D:-}" ] && rmdir -- "$D" 2>/dev/null
        exit $s
        """
    }

    /// SIGTERM to the role's process group, SIGKILL after the grace period; exit 0 once it is gone.
    func stopCommand(pidFile: String, graceSeconds: Int) -> String {
        let p = shellQuote(pidFile)
        return """
        P=\(p); [ -s "$P" ] || exit 0; g=$(cat "$P"); [ -n "$g" ] || exit 0
        kill -TERM -"$g" 2>/dev/null || { rm -f "$P"; exit 0; }
        i=0; while kill -0 -"$g" 2>/dev/null && [ $i -lt \(graceSeconds * 10) ]; do sleep 0.1; i=$((i+1)); done
        kill -KILL -"$g" 2>/dev/null && sleep 0.2
        rm -f -- "$P"; case "$P" in */featstream-launch.*/*) rmdir -- "$(dirname -- "$P")" 2>/dev/null;; esac
        if kill -0 -"$g" 2>/dev/null; then echo "process group $g is still alive" >&2; exit 1; fi
        exit 0
        """
    }

    /// The ssh client's command line for `destination`, options first.
    func sshArguments(_ destination: String, _ remoteCommand: String) -> [String] {
        var arguments: [String] = []
        if let config = definition.ssh.configFile { arguments += ["-F", config] }
        if let user = definition.ssh.user { arguments += ["-l", user] }
        arguments += ["-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=\(definition.ssh.connectTimeout)"]
        for option in definition.ssh.options { arguments += ["-o", option] }
        // `--` ends ssh's options: a destination can never be read as one (it is validated too).
        return arguments + ["--", destination, remoteCommand]
    }

    /// A Process for ssh in a session of its own, so a terminal's Ctrl-C reaches only the launcher,
    /// which then stops the roles in order instead of every ssh dropping at once.
    func sshProcess(_ destination: String, _ remoteCommand: String) -> Process {
        let process = Process()
        let setsid = "/usr/bin/setsid"
        if FileManager.default.isExecutableFile(atPath: setsid) {
            process.executableURL = URL(fileURLWithPath: setsid)
            process.arguments = ["-w", definition.ssh.executable] + sshArguments(destination, remoteCommand)
        } else {
            process.executableURL = URL(fileURLWithPath: definition.ssh.executable)
            process.arguments = sshArguments(destination, remoteCommand)
        }
        return process
    }

    /// Runs one short ssh command to completion (or `timeout`), returning its status and output.
    func ssh(_ destination: String, _ remoteCommand: String, timeout: Double) -> (status: Int32, output: String) {
        let process = sshProcess(destination, remoteCommand)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle(forReadingAtPath: "/dev/null")
        let collected = Collected()
        do { try process.run() } catch { return (-1, "cannot run \(definition.ssh.executable): \(error)") }
        let reader = Thread {
            collected.set(pipe.fileHandleForReading.readDataToEndOfFile())
        }
        reader.start()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            return (-1, "timed out after \(Int(timeout)) s")
        }
        process.waitUntilExit()
        let output = collected.wait(seconds: 2)
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    // MARK: Output

    func say(_ text: String) {
        outputLock.withLock { FileHandle.standardError.write(Data("launch: \(text)\n".utf8)) }
    }

    func emit(_ line: String, from role: PlannedRole, toError: Bool) {
        if line.contains("progress ") && line.contains(" shards") {
            stateLock.withLock { lastProgress = line }
        }
        let text = "[\(role.host) \(role.label)] \(line)\n"
        outputLock.withLock {
            (toError ? FileHandle.standardError : FileHandle.standardOutput).write(Data(text.utf8))
        }
    }

    private func summarize(_ outcomes: [RoleOutcome]) {
        var lines = ["what ran where:"]
        let hostWidth = max(4, outcomes.map(\.role.host.count).max() ?? 4)
        let labelWidth = max(4, outcomes.map(\.role.label.count).max() ?? 4)
        func pad(_ s: String, _ width: Int) -> String { s + String(repeating: " ", count: max(0, width - s.count)) }
        lines.append("  \(pad("HOST", hostWidth))  \(pad("ROLE", labelWidth))  \(pad("PID", 8))  STATUS")
        for outcome in outcomes {
            var status: String
            if let code = outcome.status {
                status = describe(code)
                if outcome.stoppedByLauncher { status += ", stopped by launch" }
            } else {
                status = outcome.stoppedByLauncher ? "killed by launch (no status)" : "not started"
            }
            lines.append("  \(pad(outcome.role.host, hostWidth))  \(pad(outcome.role.label, labelWidth))  "
                         + "\(pad(outcome.pid.map(String.init) ?? "-", 8))  \(status)")
        }
        outputLock.withLock { FileHandle.standardOutput.write(Data(lines.map { "launch: \($0)\n" }.joined().utf8)) }
    }

    // MARK: Signals

    private func installSignalHandlers() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in
                let first = self.stateLock.withLock { () -> Bool in
                    defer { if self.interruptedBy == nil { self.interruptedBy = number } }
                    return self.interruptedBy == nil
                }
                if first { self.say("signal \(number): stopping the cluster") }
            }
            source.resume()
            signalSources.append(source)
        }
    }

    private func removeSignalHandlers() {
        for source in signalSources { source.cancel() }
        signalSources.removeAll()
        signal(SIGINT, SIG_DFL)
        signal(SIGTERM, SIG_DFL)
    }

    private func interrupted() -> Int32? { stateLock.withLock { interruptedBy } }
}

// MARK: - One remote role

final class RunningRole: @unchecked Sendable {
    let role: PlannedRole
    let pidFile: String
    private unowned let launcher: Launcher
    private let process: Process
    private let input = Pipe()
    private let lock = NSLock()
    private var remotePid: Int?
    private var remotePidFile: String?
    private var stopping = false
    private var gone = true
    private let readers = DispatchGroup()

    init(role: PlannedRole, launcher: Launcher) {
        self.role = role
        self.launcher = launcher
        let name = "\(launcher.launchID)-\(role.label).pid"
        // Without run_dir the wrapper makes a private folder and reports the full path (see wrapperCommand).
        self.pidFile = launcher.definition.job.runDirectory.map { ($0 as NSString).appendingPathComponent(name) } ?? name
        self.process = launcher.sshProcess(role.host, launcher.wrapperCommand(role, pidFile: pidFile))
    }

    func start() throws {
        let out = Pipe(), err = Pipe()
        process.standardInput = input
        process.standardOutput = out
        process.standardError = err
        try process.run()
        launcher.say("started \(role.label) on \(role.host): \(role.command.joined(separator: " "))")
        follow(out.fileHandleForReading, toError: false)
        follow(err.fileHandleForReading, toError: true)
    }

    /// Relays lines with a `[host role]` prefix; the wrapper's pid report is consumed here.
    private func follow(_ handle: FileHandle, toError: Bool) {
        readers.enter()
        Thread.detachNewThread { [self] in
            var buffer = Data()
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                buffer.append(chunk)
                while let newline = buffer.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: buffer[buffer.startIndex..<newline], as: UTF8.self)
                    buffer.removeSubrange(buffer.startIndex...newline)
                    self.handle(line, toError: toError)
                }
            }
            if !buffer.isEmpty { self.handle(String(decoding: buffer, as: UTF8.self), toError: toError) }
            self.readers.leave()
        }
    }

    private func handle(_ line: String, toError: Bool) {
        let fileMarker = "@@featstream-launch pidfile "
        if line.hasPrefix(fileMarker) {
            lock.withLock { remotePidFile = String(line.dropFirst(fileMarker.count)) }
            return
        }
        let marker = "@@featstream-launch pid "
        if line.hasPrefix(marker), let pid = Int(line.dropFirst(marker.count)) {
            lock.withLock { remotePid = pid }
            return
        }
        launcher.emit(line, from: role, toError: toError)
    }

    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    /// The pid file as the remote wrapper reported it (its private folder), else the planned path.
    var effectivePidFile: String { lock.withLock { remotePidFile ?? pidFile } }

    func markStopping() { lock.withLock { stopping = true } }
    func setConfirmedGone(_ value: Bool) { lock.withLock { gone = gone && value } }

    func closeInput() { try? input.fileHandleForWriting.close() }

    func killLocalClient() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    func waitForOutput(seconds: Double) { _ = readers.wait(timeout: .now() + seconds) }

    var outcome: RoleOutcome {
        lock.withLock {
            RoleOutcome(role: role, pid: remotePid, status: process.isRunning ? nil : process.terminationStatus,
                        stoppedByLauncher: stopping, confirmedGone: gone)
        }
    }
}

// MARK: - Helpers

/// Per-host findings from the parallel reachability checks.
final class Problems: @unchecked Sendable {
    private let lock = NSLock()
    private var problems: [String: String] = [:]

    func set(_ host: String, _ problem: String?) { lock.withLock { problems[host] = problem } }
    func get(_ host: String) -> String? { lock.withLock { problems[host] } }
}

/// Data handed from a reader thread to the thread waiting for it.
final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private let done = DispatchSemaphore(value: 0)
    private var data = Data()

    func set(_ value: Data) {
        lock.withLock { data = value }
        done.signal()
    }

    func wait(seconds: Double) -> Data {
        _ = done.wait(timeout: .now() + seconds)
        return lock.withLock { data }
    }
}

/// Quotes `text` for a POSIX shell: the remote side gets exactly these bytes as one word.
func shellQuote(_ text: String) -> String {
    if !text.isEmpty, text.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "/._-:=@,+".contains($0)) }) { return text }
    return "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
}

/// Remote exit statuses in words: ssh's own failure, a signal, or a plain code.
func describe(_ status: Int32) -> String {
    switch status {
    case 255: return "ssh failed (255)"
    case 129...192: return "exit \(status), signal \(status - 128)"
    default: return "exit \(status)"
    }
}

/// ssh ends its messages with CRLF; only the last non-empty line says why it failed.
func lastLine(_ text: String) -> String? {
    text.components(separatedBy: .newlines).map { $0.trimmingCharacters(in: .whitespaces) }.last { !$0.isEmpty }
}

func orderedUnique(_ items: [String]) -> [String] {
    var seen = Set<String>()
    return items.filter { seen.insert($0).inserted }
}

/// The folder a dataset's locator paths start with (INDEX.md §4.2's root): an image folder or a folder of
/// tars itself, the folder of a manifest or of a single tar.
func datasetFolder(_ data: String) -> String {
    let trimmed = data.count > 1 && data.hasSuffix("/") ? String(data.dropLast()) : data
    let fileKinds = ["csv", "jsonl", "ndjson", "tar"]
    return fileKinds.contains((trimmed as NSString).pathExtension.lowercased()) ? (trimmed as NSString).deletingLastPathComponent : trimmed
}
