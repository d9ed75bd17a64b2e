import Foundation

/// Progress for a long run: a redrawn bar with images/s and ETA on a terminal, plain lines elsewhere.
public final class ProgressLine {
    private let total: Int
    private let label: String
    private let interactive: Bool
    private let start = Date()
    private var lastDraw = Date.distantPast
    private let interval: TimeInterval

    /// `total` is the number of images expected; output goes to standard error.
    public init(total: Int, label: String) {
        self.total = total
        self.label = label
        interactive = isatty(STDERR_FILENO) != 0
        interval = interactive ? 0.2 : 5
    }

    /// Reports `done` images processed; draws at most every 0.2 s (terminal) or 5 s (log).
    public func update(done: Int, deadLetters: Int) {
        let now = Date()
        guard now.timeIntervalSince(lastDraw) >= interval || done == total else { return }
        lastDraw = now
        let elapsed = now.timeIntervalSince(start)
        let rate = elapsed > 0 ? Double(done) / elapsed : 0
        let eta = rate > 0 ? Double(total - done) / rate : 0
        let percent = total > 0 ? 100 * done / total : 100
        let stats = String(format: "%d/%d %3d%% %.1f img/s ETA %@ dead letters %d",
                           done, total, percent, rate, Self.clock(eta), deadLetters)
        if interactive {
            let width = 30
            let filled = total > 0 ? width * done / total : width
            let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
            FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(stats)\u{1B}[K".utf8))
            if done == total { FileHandle.standardError.write(Data("\n".utf8)) }
        } else {
            FileHandle.standardError.write(Data("\(label): \(stats)\n".utf8))
        }
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
    }
}
