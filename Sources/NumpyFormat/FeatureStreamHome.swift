import Foundation

/// Where setup put the demo models, data and golden files: `$FEATSTREAM_HOME`, or `.featstream`
/// at the root of the source checkout that contains `anchor` (pass `#filePath`).
public func featureStreamHome(anchor: String) -> URL {
    if let home = ProcessInfo.processInfo.environment["FEATSTREAM_HOME"], !home.isEmpty {
        return URL(fileURLWithPath: home)
    }
    var directory = URL(fileURLWithPath: anchor).deletingLastPathComponent()
    while directory.path != "/" {
        if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
            return directory.appendingPathComponent(".featstream")
        }
        directory.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: ".featstream")
}
