/// FrameFuzz: libFuzzer harness for `FrameCodec.decode`.
///
/// Property checked on every input: decoding never traps or reads out of bounds, and whatever
/// decodes re-encodes to a frame that decodes to an equal message; for a frame of our own minor
/// version the re-encoding is also byte-identical (the encoding is canonical).
///
/// Two builds of one file, because SwiftPM on Linux renames an executable's `main` to
/// `FrameFuzz_main` and links `main` to it, which rules out libFuzzer's own `main`:
/// - `-DFUZZING` (Protocols/fuzz.sh): top-level code hands control to `LLVMFuzzerRunDriver`.
/// - plain `swift build`: a replayer that runs the same check on the files named on the command line,
///   so a crash found by the fuzzer reproduces without sanitizers.
import WireProtocol
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// libFuzzer's per-input entry point. Returns 0 always; a property violation aborts the process.
///
/// Random mutations almost never carry a correct CRC and length, so the input is checked twice:
/// as given (exercising the framing checks) and with its length field and CRC trailer repaired
/// (so the mutated body reaches the field decoders).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    check(input)
    if size >= FrameCodec.overhead {
        var repaired = Array(input)
        let bodyLength = UInt32(size - FrameCodec.overhead)
        repaired.withUnsafeMutableBytes { frame in
            frame.storeBytes(of: bodyLength.littleEndian, toByteOffset: 6, as: UInt32.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: frame[0..<(size - FrameCodec.trailerSize)]))
            frame.storeBytes(of: crc.littleEndian, toByteOffset: size - FrameCodec.trailerSize, as: UInt32.self)
        }
        repaired.withUnsafeBytes { check($0) }
    }
    return 0
}

/// Aborts unless `input` is rejected or survives decode → encode → decode unchanged.
func check(_ input: UnsafeRawBufferPointer) {
    let message: Message
    do {
        message = try FrameCodec.decode(input)
    } catch {
        return  // rejection is a fine answer; only crashes and inconsistencies are bugs
    }
    let again = FrameCodec.encode(message)
    let back: Message
    do {
        back = try FrameCodec.decode(again)
    } catch {
        fatalError("re-encoded \(message.type) does not decode: \(error)")
    }
    if back != message { fatalError("round trip changed \(message.type): \(message) -> \(back)") }
    if input[3] <= FrameCodec.minorVersion && !again.elementsEqual(input) {
        fatalError("\(message.type) frame of minor \(input[3]) re-encodes to different bytes")
    }
}

#if FUZZING
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

var argc = CommandLine.argc
var argv = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzz))
#else
var failures = 0
let paths = CommandLine.arguments.dropFirst()
if paths.isEmpty {
    print("usage: FrameFuzz FILE...  (replays binary inputs; build with Protocols/fuzz.sh to fuzz)")
}
for path in paths {
    guard let file = fopen(path, "rb") else {
        print("\(path): cannot open")
        failures += 1
        continue
    }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 1 << 16)
    while true {
        let n = fread(&chunk, 1, chunk.count, file)
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    fclose(file)
    let verdict: String
    do { verdict = "\(try FrameCodec.decode(bytes).type)" } catch { verdict = "rejected: \(error)" }
    _ = bytes.withUnsafeBufferPointer { buf in
        fuzz(buf.baseAddress ?? UnsafePointer(bitPattern: 1)!, buf.count)
    }
    print("\(path): \(verdict)")
}
exit(failures == 0 ? 0 : 1)
#endif
