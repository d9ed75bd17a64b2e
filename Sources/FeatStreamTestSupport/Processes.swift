import Foundation

/// Helpers the test targets share for driving the real `featstream` binary as a child process.

/// Runs a process to completion and returns its exit status and combined standard output and error.
public func runProcess(_ executable: URL, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: output, as: UTF8.self))
}

/// Runs the built `featstream` binary with `arguments`.
public func runFeatstream(_ arguments: [String]) throws -> (status: Int32, output: String) {
    try runProcess(productsDirectory.appendingPathComponent("featstream"), arguments)
}

/// The build folder that holds the test bundle and, beside it, the `featstream` executable.
public var productsDirectory: URL {
    for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
        return bundle.bundleURL.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}
