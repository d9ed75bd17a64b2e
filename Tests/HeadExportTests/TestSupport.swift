import FeatStreamTestSupport
import Foundation
import XCTest

/// The checkout these tests belong to, found from this file's real path (the scaffolding package
/// reaches it through a symlink).
let repositoryRoot: URL = {
    var directory = URL(fileURLWithPath: #filePath).resolvingSymlinksInPath().deletingLastPathComponent()
    while directory.path != "/" {
        if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) { return directory }
        directory.deleteLastPathComponent()
    }
    return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
}()

/// Where setup put the models: `$FEATSTREAM_HOME`, else `.featstream` in the checkout.
let featureStreamHome: URL = {
    if let home = ProcessInfo.processInfo.environment["FEATSTREAM_HOME"], !home.isEmpty { return URL(fileURLWithPath: home) }
    return repositoryRoot.appendingPathComponent(".featstream")
}()

/// A fresh directory removed when the test ends, unless KEEP_TEST_ARTIFACTS is set (to look at
/// the exported files by hand).
func makeScratchDirectory(_ test: XCTestCase) throws -> URL {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("HeadExportTests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    if ProcessInfo.processInfo.environment["KEEP_TEST_ARTIFACTS"] == nil {
        test.addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
    } else {
        print("test artifacts kept in \(directory.path)")
    }
    return directory
}

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Runs a program found on PATH; output goes through files so a chatty child cannot fill a pipe
/// and deadlock the wait.
func runProgram(_ arguments: [String], in scratch: URL) throws -> ProcessResult {
    let id = UUID().uuidString
    let outURL = scratch.appendingPathComponent("\(id).out"), errURL = scratch.appendingPathComponent("\(id).err")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardError = try FileHandle(forWritingTo: errURL)
    try process.run()
    process.waitUntilExit()
    let result = ProcessResult(
        status: process.terminationStatus,
        stdout: (try? String(contentsOf: outURL, encoding: .utf8)) ?? "",
        stderr: (try? String(contentsOf: errURL, encoding: .utf8)) ?? "")
    try? FileManager.default.removeItem(at: outURL)
    try? FileManager.default.removeItem(at: errURL)
    return result
}

/// Skips unless `python3` can import every module named.
func requirePython(_ modules: [String], scratch: URL) throws {
    let result = try runProgram(["python3", "-c", "import " + modules.joined(separator: ", ")], in: scratch)
    if result.status != 0 {
        throw XCTSkip("python3 with \(modules.joined(separator: ", ")) is needed (bash Ops/setup.sh installs them): \(result.stderr)")
    }
}

/// Reads a little-endian float32 C-order `.npy` file, the one kind the Python helper writes.
func readFloat32Numpy(_ url: URL) throws -> (shape: [Int], values: [Float]) {
    let bytes = [UInt8](try Data(contentsOf: url))
    guard bytes.count > 10, bytes[0] == 0x93, bytes[6] == 1 else { throw CocoaError(.fileReadCorruptFile) }
    let headerLength = Int(bytes[8]) | Int(bytes[9]) << 8
    let header = String(decoding: bytes[10..<(10 + headerLength)], as: UTF8.self)
    guard header.contains("'<f4'"), header.contains("'fortran_order': False"),
          let open = header.range(of: "'shape': ("), let close = header[open.upperBound...].firstIndex(of: ")") else {
        throw CocoaError(.fileReadCorruptFile)
    }
    let shape = header[open.upperBound..<close].split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
    let start = 10 + headerLength
    let count = shape.reduce(1, *)
    let values = (0..<count).map { i -> Float in
        let at = start + 4 * i
        return Float(bitPattern: UInt32(bytes[at]) | UInt32(bytes[at + 1]) << 8 | UInt32(bytes[at + 2]) << 16 | UInt32(bytes[at + 3]) << 24)
    }
    return (shape, values)
}


func randomFloats(_ count: Int, in range: ClosedRange<Float>, using generator: inout SplitMix64) -> [Float] {
    (0..<count).map { _ in Float.random(in: range, using: &generator) }
}
