import FeatStreamTestSupport
import Foundation
import XCTest
@testable import HeadExport

/// A Fashion-MNIST-like run: 10 classes, 12 epochs, three workers, dead letters with markup in them.
func sampleReport() -> ReportData {
    let classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    var generator = SplitMix64(seed: 11)
    let epochs = (1...12).map { epoch -> ReportData.Epoch in
        let t = Double(epoch)
        return .init(epoch: epoch, trainLoss: 1.6 * exp(-t / 4) + 0.25, trainAccuracy: 0.93 - 0.35 * exp(-t / 3),
                     validationLoss: 1.5 * exp(-t / 4) + 0.33 + 0.004 * t, validationAccuracy: 0.90 - 0.33 * exp(-t / 3))
    }
    let confusion = (0..<10).map { row in
        (0..<10).map { column in
            row == column ? 80 + Int.random(in: 0...15, using: &generator)
                : ((row == 6 && [0, 2, 4].contains(column)) || (row == 4 && column == 2) ? Int.random(in: 8...14, using: &generator)
                    : Int.random(in: 0...2, using: &generator))
        }
    }
    let columnTotals = (0..<10).map { column in confusion.map { $0[column] }.reduce(0, +) }
    let evaluation = ReportData.Evaluation(
        classNames: classes,
        top1: Double((0..<10).map { confusion[$0][$0] }.reduce(0, +)) / Double(confusion.joined().reduce(0, +)), top5: 0.996,
        perClassPrecision: (0..<10).map { Double(confusion[$0][$0]) / Double(columnTotals[$0]) },
        perClassRecall: (0..<10).map { Double(confusion[$0][$0]) / Double(confusion[$0].reduce(0, +)) },
        confusion: confusion)
    var throughput: [String: [ReportData.ThroughputSample]] = [:]
    for (index, worker) in ["worker-a", "worker-b", "worker-c"].enumerated() {
        throughput[worker] = stride(from: 0.0, through: 120, by: 5).map { t in
            let warmup = min(1, t / 20)
            return .init(seconds: t, imagesPerSecond: max(0, warmup * (310 - 60 * Double(index)) + Double.random(in: -12...12, using: &generator)))
        }
    }
    return ReportData(
        title: "Fashion-MNIST head on efficientnet-lite0",
        summary: [
            .init(label: "backbone", value: "efficientnet-lite0 (features, 1280-d)"),
            .init(label: "head", value: "MLP 1280 → 256 → 10, ReLU"),
            .init(label: "training images", value: "60,000"),
            .init(label: "optimizer", value: "AdamW lr=1e-3 <wd=1e-4> & cosine"),
        ],
        epochs: epochs, evaluation: evaluation, throughput: throughput,
        deadLetters: [
            .init(key: "imagefolder/Bag/<script>alert(1)</script>.jpg", reason: "truncated JPEG: premature end of data"),
            .init(key: "shard-000042.tar/000123", reason: "unsupported format \"GIF\" & not an image"),
            .init(key: "imagefolder/Coat/huge.png", reason: "header claims 40000×40000 pixels > --max-pixels 100000000"),
        ])
}

final class TrainingReportTests: XCTestCase {
    func testJSONRoundTripsIncludingADivergedLoss() throws {
        let scratch = try makeScratchDirectory(self)
        var report = sampleReport()
        report.epochs.append(.init(epoch: 13, trainLoss: .nan, trainAccuracy: 0.1, validationLoss: .infinity, validationAccuracy: nil))
        let url = scratch.appendingPathComponent("report.json")
        try report.writeJSON(to: url)
        let decoded = try ReportData.decodeJSON(Data(contentsOf: url))
        XCTAssertTrue(decoded.epochs.last!.trainLoss.isNaN)
        decoded.epochs.dropLast().enumerated().forEach { XCTAssertEqual($1, report.epochs[$0]) }
        XCTAssertEqual(decoded.evaluation, report.evaluation)
        XCTAssertEqual(decoded.throughput, report.throughput)
        XCTAssertEqual(decoded.deadLetters, report.deadLetters)
        XCTAssertFalse(report.html().isEmpty, "non-finite values must not break rendering either")
    }

    func testHTMLIsSelfContainedAndEscaped() {
        let html = sampleReport().html()
        for external in ["<script", "<link", "src=", "@import", "url(http", "@font-face"] {
            XCTAssertFalse(html.contains(external), "found \(external)")
        }
        XCTAssertTrue(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;.jpg"))
        XCTAssertTrue(html.contains("unsupported format &quot;GIF&quot; &amp; not an image"))
        XCTAssertTrue(html.contains("&lt;wd=1e-4&gt; &amp; cosine"))
        XCTAssertTrue(html.contains("T-shirt/top"))
        XCTAssertEqual(html.components(separatedBy: "<svg").count - 1, 4, "loss, accuracy, confusion, throughput")
    }

    func testEmptyReportStillRenders() {
        let html = ReportData().html()
        XCTAssertTrue(html.contains("No epochs were recorded"))
        XCTAssertTrue(html.contains("Every input was processed"))
    }

    /// Renders the sample report in headless Chromium through Ops/check_report_screenshot.sh.
    /// KEEP_TEST_ARTIFACTS=1 keeps the PNG to look at.
    func testReportRendersInHeadlessChromium() throws {
        let scratch = try makeScratchDirectory(self)
        let probe = try runProgram(["sh", "-c", "command -v chromium || command -v chromium-browser || command -v google-chrome"], in: scratch)
        guard probe.status == 0 else {
            throw XCTSkip("no Chromium on PATH; apt-get install -y chromium to render the report screenshot")
        }
        let report = scratch.appendingPathComponent("report.html"), png = scratch.appendingPathComponent("report.png")
        try sampleReport().writeHTML(to: report)
        let script = repositoryRoot.appendingPathComponent("Ops/check_report_screenshot.sh")
        let result = try runProgram(["bash", script.path, report.path, png.path, "1200x2000"], in: scratch)
        XCTAssertEqual(result.status, 0, result.stderr)
        let bytes = [UInt8](try Data(contentsOf: png))
        XCTAssertGreaterThan(bytes.count, 20_000, "a blank page compresses to a few KB")
        XCTAssertEqual(Array(bytes.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "PNG signature")
        XCTAssertEqual(String(decoding: bytes[12..<16], as: UTF8.self), "IHDR")
        func bigEndian(_ at: Int) -> Int { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
        XCTAssertEqual(bigEndian(16), 1200, "width")
        XCTAssertEqual(bigEndian(20), 2000, "height")
    }
}

final class LargeReportTests: XCTestCase {
    /// ImageNet-sized evaluations must not turn the page into hundreds of megabytes of empty cells.
    func testThousandClassConfusionStaysSmall() {
        let n = 1000
        let confusion = (0..<n).map { row in (0..<n).map { column in column == row ? 45 : (column == (row + 1) % n ? 5 : 0) } }
        let report = ReportData(evaluation: .init(
            classNames: (0..<n).map { "class \($0)" }, top1: 0.9, top5: 0.99,
            perClassPrecision: [Double](repeating: 0.9, count: n), perClassRecall: [Double](repeating: 0.9, count: n), confusion: confusion))
        let html = report.html()
        XCTAssertLessThan(html.utf8.count, 2_000_000)
        XCTAssertTrue(html.contains("true class 7 → predicted class 8: 5 (10.0% of the row)"))
    }
}
