import FeatureCodec
import WireProtocol

/// The simulated worker extraction: features are a pure function of the item; bad items are dead letters,
/// poison items crash or hang the worker that reaches them.
extension ClusterSimulator {
    func extractionDelay() -> UInt64 {
        schedule.slowExtraction ? UInt64.random(in: 100...900, using: &rng) : UInt64.random(in: 1...30, using: &rng)
    }

    /// Produces the next batch of the running extraction (features are a pure function of the item).
    func extractionStep(_ slot: Int) throws {
        guard var worker = workers[slot], let extraction = worker.extraction else { return }
        let node = Node.worker(slot)
        guard worker.session.wantsMoreBatches else {
            // Backpressure: the head's credits hold the extraction back.
            schedule(.extractionStep(slot: slot, generation: worker.generation, run: worker.run), after: 10)
            return
        }
        let end = min(extraction.items.count, extraction.next + schedule.batchSize)
        if let poison = extraction.items[extraction.next..<end].lazy.compactMap({ item -> Bool? in
            guard case .file = item.locator else { return nil }
            return self.schedule.poison[item.index]
        }).first {
            if poison {
                try crash(node, kind: "poison crash")
            } else {
                // Hung in the item: no further step; the session's watchdog must notice.
                outcome.faults["poison hang", default: 0] += 1
            }
            return
        }
        if extraction.next < end {
            let batch = makeBatch(shardID: extraction.shardID, attempt: extraction.attempt, items: extraction.items, range: extraction.next..<end)
            worker.extraction!.next = end
            let outputs = worker.session.batchReady(batch, now: now)
            workers[slot] = worker
            try perform(outputs, at: node)
        }
        guard var current = workers[slot], current.extraction != nil else { return }
        if current.extraction!.next >= extraction.items.count {
            current.extraction = nil
            let outputs = current.session.extractionFinished(shardID: extraction.shardID, attempt: extraction.attempt, now: now)
            workers[slot] = current
            try perform(outputs, at: node)
        } else {
            schedule(.extractionStep(slot: slot, generation: current.generation, run: current.run), after: extractionDelay())
        }
    }

    func makeBatch(shardID: UInt32, attempt: UInt32, items: [ItemRef], range: Range<Int>) -> FeatureBatch {
        var offsets: [UInt32] = [], indexes: [UInt64] = [], labels: [Int32] = [], keys: [String] = []
        var dead: [DeadLetterEntry] = [], features: [Float] = []
        for offset in range {
            let item = items[offset]
            if case .rejected(let reason) = item.locator {
                // As the real worker: the coordinator's reason (the scan's, or a poison verdict).
                dead.append(DeadLetterEntry(offset: UInt32(offset), key: item.key, reason: reason))
                continue
            }
            if badItems.contains(item.index) {
                dead.append(DeadLetterEntry(offset: UInt32(offset), key: item.key, reason: "decode: simulated bad item"))
                continue
            }
            offsets.append(UInt32(offset))
            indexes.append(item.index)
            labels.append(item.label)
            keys.append(item.key)
            features += (0..<Self.dimension).map { Float(Int(item.index) * 8 + $0) / 64 }
        }
        let (payload, rawLength) = features.withUnsafeBufferPointer { FeatureCodec.encode($0, dtype: .f16, codec: .shuffleLZ4) }
        return FeatureBatch(shardID: shardID, attempt: attempt, shardItemCount: UInt32(items.count), offsets: offsets, indexes: indexes,
                            labels: labels, keys: keys, deadLetters: dead, dtype: .f16, dimension: UInt32(Self.dimension),
                            codec: .shuffleLZ4, rawLength: UInt32(rawLength), payload: payload)
    }
}
