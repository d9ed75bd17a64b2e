import Foundation

/// How oneDNN's OpenMP threads wait between primitives.
///
/// oneDNN runs on GNU OpenMP, whose idle threads spin before they sleep (300,000 turns by default).
/// On a quiet machine that saves a wake-up per primitive; on a shared one (more runnable threads than
/// cores) a spinning thread burns the time slice its partner needs, and a 2-thread engine collapsed:
/// open-nsfw at batch 1 ran 0.4–1.1 images/s spinning against 27–38 images/s waiting passively, in one
/// alternating run at load average 20 on 2 cores. Never spinning costs as much the other way: on the
/// quiet machine Lite0 at batch 1 ran 101 images/s passive against 237 with 10,000 turns and 272
/// always spinning (batch 16: within noise). A short spin keeps most of both: with 4 busy loops on the
/// 2 cores, open-nsfw at batch 1 ran 15–16 images/s at 10,000 turns, 23–26 passive, 5–12 at the
/// default (batch 16: within noise). So featstream spins 10,000 turns unless told otherwise.
/// libgomp reads its wait policy once, when it is loaded, so it must be in the environment before the
/// process starts.
///
/// The spin holds only while libgomp manages no more threads than there are cores. Each thread that
/// starts a parallel region gets a thread pool of its own, and beyond the core count libgomp's idle
/// threads spin a "throttled" 100 turns whatever `GOMP_SPINCOUNT` says, so they sleep at almost every
/// barrier. A process should therefore call the engine (building it included) from one thread only: a
/// worker that built its engine on its main thread and extracted on another paid a futex sleep and
/// wake-up per primitive, about 700 a second per thread, and ran its job at 0.88× of backbone-only
/// instead of 0.95×.
public enum OpenMPWaiting {
    /// Turns an idle OpenMP thread spins before it sleeps, unless the environment says otherwise.
    public static let spinCount = 10_000

    /// Re-executes this binary with `GOMP_SPINCOUNT=spinCount` unless `OMP_WAIT_POLICY` or
    /// `GOMP_SPINCOUNT` is already set (set either to choose otherwise: `OMP_WAIT_POLICY=PASSIVE` on a
    /// host shared with other busy work). Returns when nothing needs doing, or when the re-execution
    /// fails (the process then goes on with libgomp's default). Call first thing in `main`, before any
    /// thread exists.
    public static func shortSpinUnlessConfigured() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OMP_WAIT_POLICY"] == nil, environment["GOMP_SPINCOUNT"] == nil else { return }
        setenv("GOMP_SPINCOUNT", String(spinCount), 1)
        // Through the binary's own path, not /proc/self/exe: the kernel names a process after the file it
        // executes, and `ps`, `pgrep featstream` and systemd should see "featstream", not "exe".
        var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let length = readlink("/proc/self/exe", &path, Int(PATH_MAX))
        execv(length > 0 ? path : Array("/proc/self/exe".utf8CString), CommandLine.unsafeArgv)
    }
}
