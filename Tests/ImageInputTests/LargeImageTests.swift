import CJPEG
import CPNG
import Foundation
import XCTest
@testable import ImageInput

/// A 168 Mpx PNG (10,500 x 16,000, like the clip art in issue 17), and a JPEG of the same size, go through decode,
/// exact resize and crop in a child process whose peak resident set is measured by the kernel (its own VmHWM),
/// against a child that does the same with a tiny image. A child that decodes the whole picture shows the
/// measurement does see a full decode.
final class LargeImageTests: XCTestCase {
    private static let childVariable = "IMAGEINPUT_MEMORY_CHILD"
    private static let width = 10_500, height = 16_000

    /// The child's body: `mode:path` in the environment says what to decode. Skipped when run on its own.
    func testMemoryChild() throws {
        guard let spec = ProcessInfo.processInfo.environment[Self.childVariable] else {
            throw XCTSkip("runs only as the child process of testHugePNGExtractsInBoundedMemory")
        }
        let parts = spec.split(separator: ":", maxSplits: 2).map(String.init)
        // The child's own high-water mark, read from its own memory map at the end: ru_maxrss from wait4 would
        // include the parent's, which execve after a vfork-style spawn carries over (a big test process hides
        // any difference between the children).
        defer {
            let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
            try? String(line.split(separator: " ").dropFirst().first ?? "0").write(toFile: parts[2], atomically: true, encoding: .utf8)
        }
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: parts[1])))
        let decoder = ImageDecoder()
        if parts[0] == "whole" {
            let image = try decoder.decode(bytes, name: parts[1])
            XCTAssertEqual(image.pixels.count, image.width * image.height * 3)
            return
        }
        let config = Preprocessing(resizeShorterSide: 64, crop: 32, mean: [0, 0, 0], std: [1, 1, 1], resize: .exact)
        let preprocessor = try ImagePreprocessor(config)
        var out = [Float](repeating: -1, count: config.valuesPerImage)
        try bytes.withUnsafeBytes { raw in
            try out.withUnsafeMutableBufferPointer {
                try preprocessor.decode(raw, name: parts[1], with: decoder, into: $0.baseAddress!, slot: 0, layout: .nhwc)
            }
        }
        // Green is 128 everywhere in the picture, so it is 128 everywhere in the crop: real pixels were resized.
        for i in stride(from: 1, to: out.count, by: 3) { XCTAssertEqual(out[i], 128, accuracy: 0.01) }
    }

    func testHugePNGExtractsInBoundedMemory() throws {
        try assertStreamsInBoundedMemory(format: "PNG", write: writePatternPNG)
    }

    /// `exact` mode decodes a JPEG at full size, a scanline at a time (libjpeg), never as a whole picture.
    func testHugeJPEGExtractsInBoundedMemory() throws {
        try assertStreamsInBoundedMemory(format: "JPEG", write: writeGreyJPEG)
    }

    private func assertStreamsInBoundedMemory(format: String, write: (String, Int, Int) throws -> Void,
                                              file: StaticString = #filePath, line: UInt = #line) throws {
        let dir = try TemporaryDirectory()
        let huge = dir.path + "/huge." + format.lowercased(), tiny = dir.path + "/tiny." + format.lowercased()
        try write(huge, Self.width, Self.height)
        try write(tiny, 300, 200)
        let baseline = try childPeakMegabytes(mode: "stream", path: tiny)
        let streamed = try childPeakMegabytes(mode: "stream", path: huge)
        let whole = try childPeakMegabytes(mode: "whole", path: huge)
        print("Peak resident set: tiny \(format) \(baseline) MB, 168 Mpx \(format) streamed \(streamed) MB, decoded whole \(whole) MB.")
        XCTAssertLessThanOrEqual(streamed - baseline, 64, "streaming a 168 Mpx \(format) must cost at most ~64 MB extra", file: file, line: line)
        XCTAssertGreaterThan(whole - baseline, 400, "a whole-picture decode (504 MB of RGB) must show in the measurement", file: file, line: line)
    }

    /// A baseline JPEG of uniform grey 128 (so green is 128 after decoding, as the child checks), written by libjpeg.
    private func writeGreyJPEG(_ path: String, width: Int, height: Int) throws {
        guard let file = fopen(path, "wb") else { throw CocoaError(.fileWriteUnknown) }
        defer { fclose(file) }
        // libjpeg keeps pointers to both structures between calls: they must not move.
        let errors = UnsafeMutablePointer<jpeg_error_mgr>.allocate(capacity: 1)
        let jpeg = UnsafeMutablePointer<jpeg_compress_struct>.allocate(capacity: 1)
        defer { errors.deallocate(); jpeg.deallocate() }
        jpeg.initialize(to: jpeg_compress_struct())
        jpeg.pointee.err = jpeg_std_error(errors)
        jpeg_CreateCompress(jpeg, JPEG_LIB_VERSION, MemoryLayout<jpeg_compress_struct>.size)
        defer { jpeg_destroy_compress(jpeg) }
        jpeg_stdio_dest(jpeg, file)
        jpeg.pointee.image_width = JDIMENSION(width)
        jpeg.pointee.image_height = JDIMENSION(height)
        jpeg.pointee.input_components = 3
        jpeg.pointee.in_color_space = JCS_RGB
        jpeg_set_defaults(jpeg)
        jpeg_start_compress(jpeg, 1)
        var row = [UInt8](repeating: 128, count: width * 3)
        row.withUnsafeMutableBufferPointer { pixels in
            var rows: [JSAMPROW?] = [pixels.baseAddress]
            for _ in 0..<height { _ = jpeg_write_scanlines(jpeg, &rows, 1) }
        }
        jpeg_finish_compress(jpeg)
    }

    /// An RGB PNG written by libpng at zlib level 1 with the Up filter: every row after the first filters to
    /// zeros, so 504 MB of pixels take seconds to write and about 0.5 MB on disk.
    private func writePatternPNG(_ path: String, width: Int, height: Int) throws {
        guard let file = fopen(path, "wb") else { throw CocoaError(.fileWriteUnknown) }
        defer { fclose(file) }
        var png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nil, nil, nil)
        var info = png_create_info_struct(png)
        defer { png_destroy_write_struct(&png, &info) }
        png_init_io(png, file)
        png_set_IHDR(png, info, png_uint_32(width), png_uint_32(height), 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                     PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT)
        png_set_compression_level(png, 1)
        png_set_filter(png, 0, PNG_FILTER_UP)
        png_write_info(png, info)
        var row = [UInt8](repeating: 128, count: width * 3)
        for x in 0..<width {
            row[3 * x] = UInt8(x % 256)
            row[3 * x + 2] = UInt8((x / 256) % 256)
        }
        row.withUnsafeBufferPointer { pointer in
            for _ in 0..<height { png_write_row(png, pointer.baseAddress) }
        }
        png_write_end(png, info)
    }

    /// Runs `testMemoryChild` in a new process of this test binary and returns its peak RSS in MB.
    private func childPeakMegabytes(mode: String, path: String) throws -> Int {
        let binary = ProcessInfo.processInfo.arguments[0]
        let arguments = [binary, "ImageInputTests.LargeImageTests/testMemoryChild"]
        var environment = ProcessInfo.processInfo.environment
        let report = path + ".\(mode).hwm"
        environment[Self.childVariable] = "\(mode):\(path):\(report)"
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { (argv + envp).forEach { free($0) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, binary, nil, nil, argv, envp)
        XCTAssertEqual(spawned, 0, "cannot start \(binary)")
        var status: Int32 = 0
        var usage = rusage()
        XCTAssertEqual(wait4(pid, &status, 0, &usage), pid)
        XCTAssertEqual(status & 0x7f, 0, "the \(mode) child was killed by signal \(status & 0x7f)")
        XCTAssertEqual((status >> 8) & 0xff, 0, "the \(mode) child failed on \(path)")
        let kilobytes = Int((try String(contentsOfFile: report, encoding: .utf8)).trimmingCharacters(in: .whitespacesAndNewlines))
        return try XCTUnwrap(kilobytes, "the \(mode) child did not report its peak") / 1024
    }
}
