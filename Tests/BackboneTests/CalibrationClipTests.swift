@testable import Backbone
import Foundation
import XCTest

/// Percentile clipping of calibration ranges (issue 16 §3): one outlier no longer sets a tensor's scale.
final class CalibrationClipTests: XCTestCase {
    func observe(_ values: [Float], as name: String, into calibration: inout Calibration) {
        values.withUnsafeBufferPointer { calibration.observe(name, $0) }
    }

    func testAnOutlierSetsTheMinMaxRangeButNotTheClippedOne() throws {
        var calibration = Calibration()
        // 9,999 values spread over [0, 1), one at 1,000 (a post-ReLU tensor), in two batches.
        let bulk = (0..<9_999).map { Float($0) / 9_999 }
        observe(Array(bulk[..<5_000]), as: "relu", into: &calibration)
        observe(Array(bulk[5_000...]) + [1_000], as: "relu", into: &calibration)
        // A signed tensor in [-2, 2] with one outlier at -500.
        let signed = (0..<9_999).map { Float($0) / 9_999 * 4 - 2 } + [-500]
        observe(signed, as: "signed", into: &calibration)
        XCTAssertEqual(calibration.ranges["relu"], Calibration.Range(min: 0, max: 1_000))
        XCTAssertEqual(calibration.ranges["signed"]?.min, -500)

        let clipped = calibration.clipped(atPercentile: 99.9)
        XCTAssertEqual(clipped.method, "percentile 99.9")
        let relu = try XCTUnwrap(clipped.ranges["relu"])
        XCTAssertEqual(relu.min, 0, "a non-negative range stays non-negative (u8)")
        // The 99.9th percentile of the magnitudes is 0.999; a bin is 1/32 of an octave wide.
        XCTAssertGreaterThanOrEqual(relu.max, 0.998)
        XCTAssertLessThanOrEqual(relu.max, 0.999 * (1 + 1.0 / 32) + 1e-6)
        let signedRange = try XCTUnwrap(clipped.ranges["signed"])
        XCTAssertLessThan(signedRange.min, -1.99)
        XCTAssertGreaterThan(signedRange.min, -2.1, "the outlier at -500 is clipped")
        XCTAssertEqual(signedRange.max, calibration.ranges["signed"]!.max, "a range inside the clip is kept")
        // At the 100th percentile nothing is clipped beyond the bin's width.
        XCTAssertGreaterThanOrEqual(calibration.clipped(atPercentile: 100).ranges["relu"]!.max, 1_000)
    }

    func testMagnitudeBinsCoverEveryFiniteValueWithinAThirtySecondOfAnOctave() {
        for value: Float in [1e-30, 0.001, 0.5, 1, 3.14159, -7.5, 65_504, 1e30] {
            let bin = Calibration.magnitudeBin(value)
            XCTAssertLessThan(bin, Calibration.magnitudeBins, "\(value)")
            let top = Calibration.magnitudeBinTop(bin)
            XCTAssertGreaterThanOrEqual(top, abs(value), "\(value)")
            XCTAssertLessThanOrEqual(Double(top), Double(abs(value)) * (1 + 1.0 / 32) + 1e-38, "\(value)")
        }
        XCTAssertGreaterThanOrEqual(Calibration.magnitudeBin(.infinity), Calibration.magnitudeBins)
        XCTAssertGreaterThanOrEqual(Calibration.magnitudeBin(.nan), Calibration.magnitudeBins)
    }

    func testTheFileHoldsRangesNotCounts() throws {
        var calibration = Calibration(images: ["a.png"])
        observe([0, 1, 2], as: "t", into: &calibration)
        let json = try JSONEncoder().encode(calibration)
        XCTAssertFalse(String(decoding: json, as: UTF8.self).contains("magnitudes"))
        XCTAssertEqual(try JSONDecoder().decode(Calibration.self, from: json), calibration)
    }
}
