import Backbone
import DatasetIndex
import Foundation
import ImageInput

/// An item that could not be decoded, with the reason; written out instead of stopping the run. (The index
/// scan's own rejects are `IndexDeadLetter`s.)
public struct DeadLetter: Sendable, Equatable, Hashable {
    /// The item's key.
    public let key: String
    /// A sentence saying why.
    public let reason: String
}

/// The features of one batch of images, in dataset order, with the items that could not be decoded.
public struct ExtractedBatch: Sendable {
    /// The images that produced features, in dataset order; row `i` of `features` belongs to `items[i]`.
    public var items: [IndexedItem]
    /// `items.count * featureWidth` floats, row-major.
    public var features: [Float]
    /// `items.count * logitsWidth` floats when logits were requested.
    public var logits: [Float]?
    /// Items of this batch that were skipped, with the reason.
    public var deadLetters: [DeadLetter]
}

/// Decodes images and runs the backbone on the calling thread, batch by batch.
///
/// When the machine has cores the engine does not use, decoding overlaps the backbone: while the engine
/// runs batch `k`, decoder threads fill batches `k+1…`. Memory is bounded by a fixed pool of batch buffers;
/// a decoder waits for a free buffer before it claims the next batch, so the batch the engine needs next
/// always has a buffer. When the engine's threads take every core, each batch is decoded in parallel
/// between two engine runs instead: a decoder thread beside a full OpenMP team preempts one of its
/// threads mid-primitive and the whole team waits at the next barrier, which cost more than the decode.
public final class FeatureExtractor {
    /// The model config in use.
    public let config: ModelConfig
    /// The backbone engine (built for `batchSize`).
    public let engine: BackboneEngine
    /// Images per engine run.
    public let batchSize: Int
    /// Floats per image in the feature output.
    public var featureWidth: Int { engine.outputWidths[0] }
    /// Floats per image in the logits output, when requested.
    public var logitsWidth: Int? { engine.outputWidths.count > 1 ? engine.outputWidths[1] : nil }

    private let preprocessor: ImagePreprocessor
    private let pixelLimit: Int
    /// Batch buffers kept from one call to the next. A worker calls `extract` once per 32-image
    /// shard, and two fresh 9.6 MB buffers per shard cost it 4,700 page faults each time: mostly 5-8%
    /// more CPU per image than one long extraction, under a cgroup quota (Benchmarks/scaling.sh).
    private var buffers: [BatchPool.Buffer] = []

    /// Loads the backbone and checks that the config's input matches the model.
    ///
    /// - Parameters:
    ///   - threads: oneDNN threads (`nil`: all cores).
    ///   - includeLogits: also compute the config's `logitsNode`.
    ///   - pixelLimit: images whose header claims more pixels are dead-lettered before decoding.
    ///   - precision: overrides the config's `precision` (`nil` keeps it); int8 reads the config's calibration.
    public init(config: ModelConfig, batchSize: Int = 16, threads: Int? = nil, includeLogits: Bool = false,
                pixelLimit: Int = ImageDecoder.defaultPixelLimit, precision: Precision? = nil) throws {
        var config = config
        if let precision { config.precision = precision }
        self.config = config
        self.batchSize = batchSize
        self.pixelLimit = pixelLimit
        var outputs = [config.featureNode]
        if includeLogits {
            guard let logits = config.logitsNode else {
                throw ModelConfigError(path: config.onnxPath, reason: "logits were requested but the config names no logitsNode")
            }
            outputs.append(logits)
        }
        engine = try BackboneEngine(modelPath: config.onnxPath, input: config.input.name, outputs: outputs,
                                    maxBatch: batchSize, threads: threads, calibration: try config.int8Calibration())
        let crop = config.preprocess.crop
        let expected = config.input.layout == .nchw ? [3, crop, crop] : [crop, crop, 3]
        guard engine.imageShape == expected else {
            throw ModelConfigError(path: config.onnxPath,
                                   reason: "the model input \(config.input.name) is \(engine.imageShape), but the config's \(config.input.layout.rawValue) crop \(crop) gives \(expected)")
        }
        preprocessor = try ImagePreprocessor(config.preprocess)
    }

    /// Runs `items` through decode and the backbone, calling `sink` with each batch in dataset order. Bytes
    /// are read through `ItemLocator.bytes()`, the one reading path for index items and assignments.
    /// A caller with a large dataset passes ranges of its index, so no item list outlives a call.
    ///
    /// Bad images never stop the run: each becomes a `DeadLetter` in its batch. `sink` runs on the
    /// calling thread; if it throws, decoding stops and the error is rethrown. When this returns or
    /// throws, no decoder thread is left running. Calls must not overlap: they share the engine and
    /// the batch buffers.
    public func extract(_ items: [IndexedItem], decodeThreads: Int = 1,
                        sink: (ExtractedBatch) throws -> Void) throws {
        let batchCount = (items.count + batchSize - 1) / batchSize
        guard batchCount > 0 else { return }
        let decoders = max(1, decodeThreads)
        if engine.threads + decoders > ProcessInfo.processInfo.activeProcessorCount {
            return try extractBetweenRuns(items, batchCount: batchCount, sink: sink)
        }
        let imageFloats = engine.imageElementCount
        while buffers.count < decoders + 1 { buffers.append(BatchPool.Buffer(floats: batchSize * imageFloats)) }
        let pool = BatchPool(buffers: Array(buffers.prefix(decoders + 1)), decoders: decoders)
        // The buffers outlive this call, so no decoder may still be writing into one when it returns.
        defer { pool.cancelAndWaitForDecoders() }
        for _ in 0..<decoders {
            let thread = Thread { [preprocessor, pixelLimit, batchSize, layout = config.input.layout] in
                let decoder = ImageDecoder(pixelLimit: pixelLimit)
                while let (number, buffer) = pool.claim(batchCount: batchCount) {
                    let range = (number * batchSize)..<min(items.count, (number + 1) * batchSize)
                    var decoded: [IndexedItem] = []
                    var dead: [DeadLetter] = []
                    for item in items[range] {
                        if let reason = Self.decode(item, with: preprocessor, decoder, into: buffer.pointer, slot: decoded.count, layout: layout) {
                            dead.append(DeadLetter(key: item.key, reason: reason))
                        } else {
                            decoded.append(item)
                        }
                    }
                    buffer.items = decoded
                    buffer.deadLetters = dead
                    pool.finish(number, buffer)
                }
                pool.decoderExited()
            }
            thread.stackSize = 1 << 20
            thread.start()
        }
        for number in 0..<batchCount {
            let buffer = pool.next(number)
            let batch = try run(buffer, items: buffer.items, deadLetters: buffer.deadLetters)
            pool.release(buffer)
            try sink(batch)
        }
    }

    /// `extract` when the engine's threads take every core: each batch is decoded by as many threads as the
    /// engine has (idle while it waits), then run.
    private func extractBetweenRuns(_ items: [IndexedItem], batchCount: Int, sink: (ExtractedBatch) throws -> Void) throws {
        let imageFloats = engine.imageElementCount
        if buffers.isEmpty { buffers.append(BatchPool.Buffer(floats: batchSize * imageFloats)) }
        let buffer = buffers[0]
        let parts = max(1, min(engine.threads, batchSize))
        let decoder = ImageDecoder(pixelLimit: pixelLimit)
        let layout = config.input.layout
        for number in 0..<batchCount {
            let batch = Array(items[(number * batchSize)..<min(items.count, (number + 1) * batchSize)])
            // Each item decodes into the slot of its position; failures leave a hole, closed up below.
            // Each part writes only its own slots, hence the unchecked capture.
            nonisolated(unsafe) let failures = UnsafeMutableBufferPointer<String?>.allocate(capacity: batch.count)
            failures.initialize(repeating: nil)
            defer { failures.deallocate() }
            DispatchQueue.concurrentPerform(iterations: parts) { [preprocessor] part in
                var slot = part
                while slot < batch.count {
                    failures[slot] = Self.decode(batch[slot], with: preprocessor, decoder, into: buffer.pointer, slot: slot, layout: layout)
                    slot += parts
                }
            }
            var decoded: [IndexedItem] = []
            var dead: [DeadLetter] = []
            for (slot, item) in batch.enumerated() {
                if let reason = failures[slot] { dead.append(DeadLetter(key: item.key, reason: reason)); continue }
                if decoded.count != slot {
                    (buffer.pointer + decoded.count * imageFloats).update(from: buffer.pointer + slot * imageFloats, count: imageFloats)
                }
                decoded.append(item)
            }
            try sink(try run(buffer, items: decoded, deadLetters: dead))
        }
    }

    /// Reads and decodes `item` into `slot` of `buffer`; nil when it worked, else the dead-letter reason.
    private static func decode(_ item: IndexedItem, with preprocessor: ImagePreprocessor, _ decoder: ImageDecoder,
                               into buffer: UnsafeMutablePointer<Float>, slot: Int, layout: TensorLayout) -> String? {
        do {
            let bytes = try item.locator.bytes()
            try bytes.withUnsafeBytes { raw in
                try preprocessor.decode(raw, name: item.key, with: decoder, into: buffer, slot: slot, layout: layout)
            }
            return nil
        } catch {
            return reason(error)
        }
    }

    /// Runs the backbone on the first `items.count` images of `buffer`.
    private func run(_ buffer: BatchPool.Buffer, items: [IndexedItem], deadLetters: [DeadLetter]) throws -> ExtractedBatch {
        var batch = ExtractedBatch(items: items, features: [], logits: nil, deadLetters: deadLetters)
        guard !items.isEmpty else { return batch }
        let imageFloats = engine.imageElementCount
        let outputs = try engine.run(UnsafeBufferPointer(start: buffer.pointer, count: items.count * imageFloats), batch: items.count)
        batch.features = outputs[0]
        if outputs.count > 1 { batch.logits = outputs[1] }
        return batch
    }

    static func reason(_ error: Error) -> String {
        if let error = error as? ImageDecodeError { return error.reason }
        return "\(error)"
    }
}

/// A fixed set of batch buffers handed between decoder threads and the engine thread.
final class BatchPool: @unchecked Sendable {
    final class Buffer: @unchecked Sendable {
        let pointer: UnsafeMutablePointer<Float>
        var items: [IndexedItem] = []
        var deadLetters: [DeadLetter] = []
        init(floats: Int) { pointer = .allocate(capacity: floats) }
        deinit { pointer.deallocate() }
    }

    private let condition = NSCondition()
    private var free: [Buffer]
    private var done: [Int: Buffer] = [:]
    private var nextToClaim = 0
    private var cancelled = false
    private var runningDecoders: Int

    init(buffers: [Buffer], decoders: Int) {
        free = buffers
        runningDecoders = decoders
    }

    /// A decoder takes a free buffer first and only then the next batch number, so the lowest
    /// unfinished batch always holds a buffer and the engine can never wait on it forever.
    func claim(batchCount: Int) -> (Int, Buffer)? {
        condition.lock()
        defer { condition.unlock() }
        while !cancelled && nextToClaim < batchCount && free.isEmpty { condition.wait() }
        guard !cancelled, nextToClaim < batchCount else { return nil }
        let number = nextToClaim
        nextToClaim += 1
        return (number, free.removeLast())
    }

    func finish(_ number: Int, _ buffer: Buffer) {
        condition.lock()
        done[number] = buffer
        condition.broadcast()
        condition.unlock()
    }

    /// Waits for batch `number` to be decoded.
    func next(_ number: Int) -> Buffer {
        condition.lock()
        defer { condition.unlock() }
        while done[number] == nil { condition.wait() }
        return done.removeValue(forKey: number)!
    }

    func release(_ buffer: Buffer) {
        condition.lock()
        buffer.items = []
        buffer.deadLetters = []
        free.append(buffer)
        condition.broadcast()
        condition.unlock()
    }

    /// Called by each decoder thread as its last act.
    func decoderExited() {
        condition.lock()
        runningDecoders -= 1
        condition.broadcast()
        condition.unlock()
    }

    /// Stops decoders at their next claim (the engine side failed or finished) and waits until
    /// none is left, so that the buffers can be handed to the next call.
    func cancelAndWaitForDecoders() {
        condition.lock()
        defer { condition.unlock() }
        cancelled = true
        condition.broadcast()
        while runningDecoders > 0 { condition.wait() }
    }
}
