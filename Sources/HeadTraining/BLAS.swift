import COpenBLAS

/// Sets how many threads OpenBLAS uses for every later matrix product in this process.
///
/// OpenBLAS otherwise starts one thread per core it sees, which oversubscribes a machine
/// shared with the extraction workers; training calls this with `TrainingConfig.blasThreads`.
public func setBLASThreads(_ count: Int) {
    openblas_set_num_threads(Int32(max(1, count)))
}

/// Thin, row-major wrappers over the CBLAS calls training needs.
enum BLAS {
    /// C = alpha · op(A) · op(B) + beta · C, with op(A) m×k and op(B) k×n, all row-major.
    @inline(__always)
    static func gemm(transposeA: Bool, transposeB: Bool, m: Int, n: Int, k: Int,
                     alpha: Float = 1, a: UnsafePointer<Float>, lda: Int,
                     b: UnsafePointer<Float>, ldb: Int,
                     beta: Float = 0, c: UnsafeMutablePointer<Float>, ldc: Int) {
        cblas_sgemm(CblasRowMajor,
                    transposeA ? CblasTrans : CblasNoTrans,
                    transposeB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// Dot product accumulated in double precision, because L-BFGS curvature pairs and
    /// gradient norms near the optimum are sums of many tiny, cancelling terms.
    @inline(__always)
    static func dot(_ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>, count: Int) -> Double {
        cblas_dsdot(Int32(count), x, 1, y, 1)
    }

    /// y += alpha · x.
    @inline(__always)
    static func axpy(_ alpha: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, count: Int) {
        cblas_saxpy(Int32(count), alpha, x, 1, y, 1)
    }
}

extension Array where Element == Float {
    /// Double-precision dot product with another array of the same length.
    func dot(_ other: [Float]) -> Double {
        precondition(count == other.count)
        return withUnsafeBufferPointer { x in
            other.withUnsafeBufferPointer { y in BLAS.dot(x.baseAddress!, y.baseAddress!, count: count) }
        }
    }

    /// self += alpha · x.
    mutating func addScaled(_ alpha: Float, _ x: [Float]) {
        precondition(count == x.count)
        let n = count
        withUnsafeMutableBufferPointer { y in
            x.withUnsafeBufferPointer { x in BLAS.axpy(alpha, x.baseAddress!, y.baseAddress!, count: n) }
        }
    }

    /// Largest absolute element, the gradient norm scikit-learn's lbfgs tolerance is stated in.
    var maxAbs: Float {
        var largest: Float = 0
        for value in self { largest = Swift.max(largest, abs(value)) }
        return largest
    }
}
