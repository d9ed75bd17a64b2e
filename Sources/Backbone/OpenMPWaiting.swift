import Foundation

/// How oneDNN's OpenMP threads wait between primitives.
///
/// oneDNN runs on GNU OpenMP, whose idle threads spin for a while before they sleep. On a quiet
/// machine that saves a wake-up per primitive; on a shared one (more runnable threads than cores)
/// a spinning thread burns the time slice its partner needs, and a 2-thread engine collapsed:
/// open-nsfw at batch 1 ran 0.4–1.1 images/s spinning against 27–38 images/s waiting passively,
/// in one alternating run at load average 20 on 2 cores (batch 16: 3.9–7.0 against 12.5–17.7).
/// libgomp reads its wait policy once, when it is loaded, so the policy must be in the
/// environment before the process starts.
public enum OpenMPWaiting {
    /// Re-executes this binary with `OMP_WAIT_POLICY=PASSIVE` unless `OMP_WAIT_POLICY` or
    /// `GOMP_SPINCOUNT` is already set (set either to choose otherwise). Returns when nothing needs
    /// doing, or when the re-execution fails (the process then goes on with the default policy).
    /// Call first thing in `main`, before any thread exists.
    public static func passiveUnlessConfigured() {
        let environment = ProcessInfo.processInfo.environment
        guard environment["OMP_WAIT_POLICY"] == nil, environment["GOMP_SPINCOUNT"] == nil else { return }
        setenv("OMP_WAIT_POLICY", "PASSIVE", 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
    }
}
