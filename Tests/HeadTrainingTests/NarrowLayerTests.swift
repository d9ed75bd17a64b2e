import XCTest
@testable import HeadTraining

/// The softmax layer's products (CPU kernels where the CPU has AVX2+FMA, else BLAS) and the streamed
/// pass that standardizes slices itself, each against a reference computed another way.
final class NarrowLayerTests: XCTestCase {
    /// Shapes around the kernels' tiles (4 rows × 2 classes; 8- and 32-column vectors; scalar tails),
    /// through the kernels and through BLAS, which is what a CPU without AVX2+FMA runs.
    func testNarrowLayerProductsMatchADoublePrecisionReference() {
        var rng = SplitMix64(seed: 91)
        // The BLAS path always; the kernels too where the CPU has them.
        let cases = (NarrowLayer.hasKernels ? [false, true] : [false]).flatMap { kernels in
            [1, 3, 4, 5, 51].flatMap { rows in
                [1, 7, 8, 9, 31, 32, 33, 70].flatMap { d in [1, 2, 3, 10].map { k in (kernels, rows, d, k) } }
            }
        }
        for (kernels, rows, d, k) in cases {
            let x = (0..<(rows * d)).map { _ in rng.nextGaussian() }
            let w = (0..<(k * d)).map { _ in rng.nextGaussian() }
            let dz = (0..<(rows * k)).map { _ in rng.nextGaussian() }
            let g0 = (0..<(k * d)).map { _ in rng.nextGaussian() }
            var z = [Float](repeating: .nan, count: rows * k)
            var g = g0
            x.withUnsafeBufferPointer { x in
                w.withUnsafeBufferPointer { w in
                    z.withUnsafeMutableBufferPointer { z in
                        NarrowLayer.logits(x: x.baseAddress!, rows: rows, d: d, w: w.baseAddress!, k: k, z: z.baseAddress!, kernels: kernels)
                    }
                }
                dz.withUnsafeBufferPointer { dz in
                    g.withUnsafeMutableBufferPointer { g in
                        NarrowLayer.addWeightGradient(dz: dz.baseAddress!, rows: rows, k: k, x: x.baseAddress!, d: d, g: g.baseAddress!,
                                                      kernels: kernels)
                    }
                }
            }
            let shape = "rows \(rows), d \(d), k \(k), kernels \(kernels)"
            for r in 0..<rows {
                for c in 0..<k {
                    var sum = 0.0, magnitude = 0.0
                    for j in 0..<d {
                        let term = Double(x[r * d + j]) * Double(w[c * d + j])
                        sum += term
                        magnitude += abs(term)
                    }
                    XCTAssertEqual(Double(z[r * k + c]), sum, accuracy: 1e-5 * magnitude + 1e-6, "logit \(r),\(c) at \(shape)")
                }
            }
            for c in 0..<k {
                for j in 0..<d {
                    var sum = Double(g0[c * d + j]), magnitude = abs(sum)
                    for r in 0..<rows {
                        let term = Double(dz[r * k + c]) * Double(x[r * d + j])
                        sum += term
                        magnitude += abs(term)
                    }
                    XCTAssertEqual(Double(g[c * d + j]), sum, accuracy: 1e-5 * magnitude + 1e-6, "gradient \(c),\(j) at \(shape)")
                }
            }
        }
    }

    /// One streamed evaluation (raw blocks, standardized a slice at a time inside the fused pass) gives
    /// the objective and gradient of the in-memory evaluation over pre-standardized rows: the same
    /// standardized values, summed in another order. Blocks smaller and larger than a slice, a width
    /// with vector tails, class weights, and a row count that fills no block exactly.
    func testStreamedEvaluationMatchesTheInMemoryEvaluation() throws {
        let data = blobs(classes: 3, perClass: 201, dimension: 37, separation: 1, seed: 93)
        var config = TrainingConfig()
        config.classWeights = .balanced
        let layout = ParameterLayout(kind: .softmaxRegression, dimension: 37, hiddenUnits: 0, classCount: 3)
        var rng = SplitMix64(seed: 95)
        let parameters = (0..<layout.parameterCount).map { _ in 0.3 * rng.nextGaussian() }
        let l2: Float = 0.01
        let inMemory = try PreparedData(config: config, train: data, validation: nil)
        var expectedGradient = [Float](repeating: 0, count: layout.parameterCount)
        let expected = inMemory.evaluator(layout: layout, l2: l2, threads: 1)(parameters, &expectedGradient)
        XCTAssertLessThan(Objective(layout: layout, l2: l2).sliceRows, 512, "a block of 512 rows must hold several slices")
        for blockRows in [32, 512] {
            let streamed = try StreamedData(config: config, source: data, classCount: 3, blockRows: blockRows)
            XCTAssertEqual(streamed.standardizer, inMemory.standardizer)
            var gradient = [Float](repeating: .nan, count: layout.parameterCount)
            let value = streamed.evaluator(layout: layout, l2: l2)(parameters, &gradient)
            XCTAssertEqual(value.objective, expected.objective, accuracy: 1e-6 * expected.objective, "blocks of \(blockRows)")
            XCTAssertEqual(value.dataLoss, expected.dataLoss, accuracy: 1e-6 * expected.dataLoss, "blocks of \(blockRows)")
            XCTAssertEqual(value.correct, expected.correct, "blocks of \(blockRows)")
            let scale = expectedGradient.maxAbs
            for (index, (a, b)) in zip(gradient, expectedGradient).enumerated() {
                XCTAssertEqual(a, b, accuracy: 1e-5 * scale, "gradient[\(index)], blocks of \(blockRows)")
            }
        }
    }
}
