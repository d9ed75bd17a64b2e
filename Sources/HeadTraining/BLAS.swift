import COpenBLAS
#if arch(x86_64)
import CSIMDKernels
#endif

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

/// The two products of a linear layer with few outputs (softmax regression: one per class), by
/// AVX2+FMA kernels when the CPU has them, else by `BLAS.gemm`.
///
/// For outputs this narrow a general GEMM spends much of its time packing operands, and OpenBLAS
/// 0.3.21 does not know recent CPUs (Emerald Rapids): it falls back to its SSE3 "Prescott" kernels,
/// which took most of a streamed L-BFGS pass. The kernels sum in another order than BLAS, so results
/// differ by float rounding only.
enum NarrowLayer {
    /// Whether the CPU kernels may run; cpuid is asked once (a VM exit under most hypervisors).
    static let hasKernels: Bool = {
        #if arch(x86_64)
        return fs_cpu_has_avx2_fma() != 0
        #else
        return false
        #endif
    }()

    /// z = x · wᵀ: `rows` rows of x (row-major, `d` wide) against the `k` rows of w (`k × d`), into
    /// z (`rows × k`, overwritten). `kernels: false` takes the BLAS path (tests check both).
    @inline(__always)
    static func logits(x: UnsafePointer<Float>, rows: Int, d: Int, w: UnsafePointer<Float>, k: Int, z: UnsafeMutablePointer<Float>,
                       kernels: Bool = hasKernels) {
        #if arch(x86_64)
        if kernels { return fs_rows_dot_rows_avx2(x, rows, d, w, k, z) }
        #endif
        BLAS.gemm(transposeA: false, transposeB: true, m: rows, n: k, k: d, a: x, lda: d, b: w, ldb: d, c: z, ldc: k)
    }

    /// g += dzᵀ · x: the weight gradient (`k × d`) of `rows` rows, dz being `rows × k` and x `rows × d`.
    /// `kernels: false` takes the BLAS path.
    @inline(__always)
    static func addWeightGradient(dz: UnsafePointer<Float>, rows: Int, k: Int, x: UnsafePointer<Float>, d: Int,
                                  g: UnsafeMutablePointer<Float>, kernels: Bool = hasKernels) {
        #if arch(x86_64)
        if kernels { return fs_add_rows_outer_avx2(dz, rows, k, x, d, g) }
        #endif
        BLAS.gemm(transposeA: true, transposeB: false, m: k, n: d, k: rows, a: dz, lda: k, b: x, ldb: d, beta: 1, c: g, ldc: d)
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
