import Foundation

/// Starts roles as child processes of this one (the local launcher beside the SSH one) and makes sure
/// none outlives it: on SIGINT or SIGTERM, and in `stopAll`, every child gets SIGTERM, then SIGKILL
/// after a grace period, and is waited for.
public final class LocalSupervisor: @unchecked Sendable {
    private let lock = NSLock()
    private var children: [Process] = []
    private var signalled = false
    private var sources: [DispatchSourceSignal] = []
    /// The featstream binary children run (this executable by default).
    public let executable: URL

    public init(executable: URL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()) {
        self.executable = executable
    }

    /// True once SIGINT or SIGTERM arrived.
    public var stopping: Bool { lock.withLock { signalled } }

    /// Starts `command` as a child.
    @discardableResult
    public func spawn(_ command: RoleCommand) throws -> Process {
        let process = Process()
        process.executableURL = executable
        process.arguments = command.arguments
        try lock.withLock {
            guard !signalled else { throw CocoaError(.userCancelled) }
            try process.run()
            children.append(process)
        }
        return process
    }

    /// On SIGINT or SIGTERM: marks `stopping` and stops every child (SIGTERM, SIGKILL after 5 s).
    public func stopOnSignals() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [self] in
                lock.withLock { signalled = true }
                stopAll(graceSeconds: 5)
            }
            source.resume()
            sources.append(source)
        }
    }

    /// SIGTERM to every running child, SIGKILL to those still running after `graceSeconds`; waits for all.
    public func stopAll(graceSeconds: Double) {
        let all = lock.withLock { children }
        for process in all where process.isRunning { kill(process.processIdentifier, SIGTERM) }
        let deadline = Date().addingTimeInterval(graceSeconds)
        while all.contains(where: \.isRunning) && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        for process in all where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in all { process.waitUntilExit() }
    }
}
