import Extraction
import Foundation
import DatasetIndex

/// One progress report of `benchmarkExtraction` (a JSON line of `featstream bench extract`).
public struct ExtractionProgress: Codable, Sendable {
    /// When the count was taken, in seconds since 1970: wall-clock time, so that the reports of several
    /// processes line up with each other and with a script's own clock.
    public var time: Double
    /// Images extracted so far, dead letters included.
    public var images: Int
}

/// `featstream extract`'s own work and nothing else: the items of `dataset` decoded and run through
/// `extractor`'s backbone, range by range of the mapped index as `extract` does, no file written. `report` gets the count after the first batch, then at most every `interval` seconds,
/// and once at the end. Benchmarks/scaling.sh runs copies of it beside its cluster jobs, under the same CPU
/// quotas, as the same work without a cluster.
public func benchmarkExtraction(_ dataset: IndexedDataset, extractor: FeatureExtractor, decodeThreads: Int, interval: Double,
                                report: (ExtractionProgress) throws -> Void) throws {
    var images = 0
    var lastReport = -Double.infinity
    let chunk = extractor.batchSize * 64
    for first in stride(from: 0, to: dataset.count, by: chunk) {
        try extractor.extract(try dataset.items(first..<min(dataset.count, first + chunk)), decodeThreads: decodeThreads) { batch in
            images += batch.items.count + batch.deadLetters.count
            let now = Date().timeIntervalSince1970
            if now - lastReport >= interval || images == dataset.count {
                lastReport = now
                try report(ExtractionProgress(time: now, images: images))
            }
        }
    }
}
