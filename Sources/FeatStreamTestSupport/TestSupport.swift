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

/// SplitMix64: a seeded generator, so randomized tests reproduce exactly on every platform.
public struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    /// A generator whose sequence is fixed by `seed`.
    public init(seed: UInt64) { state = seed }

    /// The next 64 random bits.
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Why `parseHex` refused a test vector.
public enum HexVectorError: Error { case oddDigits(String), badDigit(String) }

/// Parses the test-vector format of `Protocols/vectors`: hex byte pairs, any whitespace, `#` to the
/// end of a line is a comment.
public func parseHex(_ text: String) throws -> [UInt8] {
    var out: [UInt8] = []
    for var line in text.split(separator: "\n", omittingEmptySubsequences: false) {
        if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
        let digits = line.filter { !$0.isWhitespace }
        guard digits.count % 2 == 0 else { throw HexVectorError.oddDigits(String(line)) }
        var i = digits.startIndex
        while i < digits.endIndex {
            let j = digits.index(i, offsetBy: 2)
            guard let b = UInt8(digits[i..<j], radix: 16) else { throw HexVectorError.badDigit(String(digits[i..<j])) }
            out.append(b)
            i = j
        }
    }
    return out
}
