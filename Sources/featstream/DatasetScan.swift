import ArgumentParser
import DatasetIndex
import Foundation

extension DatasetKind: ExpressibleByArgument {
    /// `imagefolder`, `manifest` or `webdataset` (`DatasetKind.name`).
    public init?(argument: String) { self.init(name: argument) }
    public static var allValueStrings: [String] { allCases.map(\.name) }
}

/// Scans `selection` into an index in a fresh temporary folder and maps it, for commands that have no
/// output folder to keep it in (calibration, benchmarks, the head's split lookup). The folder is removed
/// at once: the mapping stays valid until the `IndexedDataset` is released, and nothing is left behind
/// even if the process is killed.
func scanIntoTemporaryIndex(_ selection: IndexSelection) throws -> IndexedDataset {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("featstream-index-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    return try IndexScan.run(selection, indexPath: folder.appendingPathComponent("dataset.index").path)
}
