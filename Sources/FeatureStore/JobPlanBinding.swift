import Foundation

/// The shard plan a store belongs to, recorded in `<store>/job-plan` (STORE.md §4.1).
///
/// A store is bound to one job: the coordinator's shard-plan fingerprint (which covers the dataset index's
/// content and the shard size) is written here by the head on its first `welcome`, before any batch is
/// accepted. Shard ids only mean something within one plan, so a store reused with another dataset would
/// otherwise report the old shards as committed and the new job would skip them (issue 13, item 10).
public enum JobPlanBinding {
    /// The file's name inside the store folder.
    public static let fileName = "job-plan"

    /// The plan the store at `root` is bound to; nil when it is not bound yet. Throws when the file exists
    /// but does not hold one 16-digit hexadecimal fingerprint.
    public static func read(root: URL) throws -> UInt64? {
        let url = root.appendingPathComponent(fileName)
        guard let data = FileManager.default.contents(atPath: url.path) else { return nil }
        let text = String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        guard text.count == 16, let plan = UInt64(text, radix: 16) else {
            throw FeatureStoreError.badManifest(path: url.path, reason: "expected one 16-digit hexadecimal shard-plan fingerprint, found \"\(text.prefix(40))\"")
        }
        return plan
    }

    /// Records `plan` durably (written to a temporary file, synced, renamed, folder synced): after a crash
    /// the file holds the whole fingerprint or does not exist.
    public static func write(_ plan: UInt64, root: URL) throws {
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        let temporary = root.appendingPathComponent(fileName + ".tmp")
        unlink(temporary.path)
        try Durable.writeFile(Data((hex(plan) + "\n").utf8), to: temporary)
        try Durable.renameItem(temporary, to: root.appendingPathComponent(fileName))
        try Durable.syncDirectory(root)
    }

    /// The fingerprint as the file and error messages print it.
    public static func hex(_ plan: UInt64) -> String {
        let digits = String(plan, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }
}
