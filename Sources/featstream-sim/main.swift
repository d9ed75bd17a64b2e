import ClusterSimulation
import Foundation

/// Runs the cluster simulator over a range of seeds (the long campaign), or one seed with a trace.
///
///     featstream-sim --seeds 1000000 [--first 1]   # seeds first ..< first + count
///     featstream-sim --seed 42 --trace              # replay one seed, printing every event
let arguments = CommandLine.arguments.dropFirst()
func value(_ flag: String) -> UInt64? {
    guard let position = arguments.firstIndex(of: flag), arguments.index(after: position) < arguments.endIndex else { return nil }
    return UInt64(arguments[arguments.index(after: position)])
}
let tracing = arguments.contains("--trace")
let seeds: Range<UInt64>
if let seed = value("--seed") {
    seeds = seed..<(seed + 1)
} else {
    let first = value("--first") ?? 1
    seeds = first..<(first + (value("--seeds") ?? 10_000))
}
let started = Date()
var faults: [String: Int] = [:]
var failures = 0
for seed in seeds {
    do {
        let simulator = try ClusterSimulator(seed: seed, trace: tracing ? { print($0) } : nil)
        let outcome = try simulator.run()
        faults.merge(outcome.faults, uniquingKeysWith: +)
        if outcome.grewPlan { faults["plan grown while scanning (not a fault)", default: 0] += 1 }
        if outcome.condemnedByFaults > 0 { faults["good item condemned while faults ran", default: 0] += outcome.condemnedByFaults }
    } catch {
        failures += 1
        print("FAIL \(error)")
        fflush(nil)  // a failing seed shows at once, also when the output is a pipe
        if failures >= 20 { break }
    }
    if !tracing, seed % 10_000 == 0 {
        print("\(seed - seeds.lowerBound + 1) seeds, \(failures) violations, \(Int(Date().timeIntervalSince(started))) s")
        fflush(nil)  // progress shows in a log file too
    }
}
let elapsed = Date().timeIntervalSince(started)
print(String(format: "%d seeds (%llu..<%llu) in %.1f s: %d violations", seeds.count, seeds.lowerBound, seeds.upperBound, elapsed, failures))
print("faults injected: " + faults.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))
exit(failures == 0 ? 0 : 1)
