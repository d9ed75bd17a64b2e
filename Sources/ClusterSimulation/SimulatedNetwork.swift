import WireProtocol

/// The simulated network: loss, duplication, delay and reordering, and partitions between any two roles.
extension ClusterSimulator {
    var faulty: Bool { now < schedule.faultsUntil }

    func send(_ message: Message, from: Node, to: Node, identity: [UInt8]) {
        if trace != nil { log("\(from) -> \(to): \(brief(message))") }
        if faulty {
            if partitions.contains(where: { ($0.a == from && $0.b == to || $0.a == to && $0.b == from) && now < $0.until }) {
                outcome.faults["partitioned message", default: 0] += 1
                return
            }
            if chance(schedule.drop) {
                outcome.faults["dropped message", default: 0] += 1
                return
            }
        }
        let generation: Int
        switch to {
        case .coordinator: generation = coordinatorGeneration
        case .head: generation = headGeneration
        case .worker(let slot): generation = workers[slot]?.generation ?? 0
        }
        let copies = faulty && chance(schedule.duplicate) ? 2 : 1
        if copies == 2 { outcome.faults["duplicated message", default: 0] += 1 }
        for _ in 0..<copies {
            let delay = faulty ? UInt64.random(in: 1...schedule.maxDelay, using: &rng) : 1
            schedule(.deliver(to: to, from: from, identity: identity, generation: generation, message: message), after: delay)
        }
    }

    func partitionSomePair() {
        var nodes: [Node] = [.coordinator, .head]
        nodes += (0..<schedule.workerCount).map { Node.worker($0) }
        let a = nodes[Int.random(in: 0..<nodes.count, using: &rng)]
        let b = nodes[Int.random(in: 0..<nodes.count, using: &rng)]
        guard a != b else { return }
        partitions.append((a, b, now + UInt64.random(in: 100...3_000, using: &rng)))
        outcome.faults["partition", default: 0] += 1
        log("PARTITION \(a) | \(b)")
    }

    func node(forIdentity identity: [UInt8]) -> Node? {
        let name = String(decoding: identity, as: UTF8.self)
        if name.hasPrefix("head.") { return name == "head.\(headGeneration)" ? .head : nil }
        guard name.hasPrefix("w"), let dot = name.firstIndex(of: "."), let slot = Int(name[name.index(after: name.startIndex)..<dot]),
              let generation = Int(name[name.index(after: dot)...]), workers.indices.contains(slot),
              workers[slot]?.generation == generation else { return nil }
        return .worker(slot)
    }
}
