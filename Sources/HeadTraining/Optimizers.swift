import Foundation

/// A small seedable generator (SplitMix64) whose whole state is one integer, so a checkpoint
/// can store it and a resumed run draws exactly the numbers an uninterrupted run would.
struct SplitMix64: Codable, Equatable {
    var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    mutating func nextUniform() -> Double { Double(next() >> 11) * 0x1.0p-53 }

    /// Uniform in 0..<bound (bound ≤ 2³²; the modulo bias is below 2⁻³²).
    mutating func nextIndex(below bound: Int) -> Int { Int(next() % UInt64(bound)) }

    /// Standard normal by Box–Muller; the second value is discarded so the state alone determines the stream.
    mutating func nextGaussian() -> Float {
        let u1 = max(nextUniform(), Double.leastNonzeroMagnitude)
        let u2 = nextUniform()
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// Fisher–Yates shuffle written out here, because the standard library's algorithm may change between releases.
    mutating func shuffle(_ values: inout [Int]) {
        guard values.count > 1 else { return }
        for index in stride(from: values.count - 1, to: 0, by: -1) {
            values.swapAt(index, nextIndex(below: index + 1))
        }
    }
}

/// Adam (Kingma & Ba) with bias correction; the L2 term is part of the gradient it is given,
/// so it minimises exactly the objective L-BFGS does.
struct Adam {
    var firstMoment: [Float]
    var secondMoment: [Float]
    var step: Int
    let beta1: Float = 0.9
    let beta2: Float = 0.999
    let epsilon: Float = 1e-8

    init(parameterCount: Int) {
        firstMoment = [Float](repeating: 0, count: parameterCount)
        secondMoment = [Float](repeating: 0, count: parameterCount)
        step = 0
    }

    init(firstMoment: [Float], secondMoment: [Float], step: Int) {
        self.firstMoment = firstMoment
        self.secondMoment = secondMoment
        self.step = step
    }

    mutating func update(_ parameters: inout [Float], gradient: [Float], learningRate: Float) {
        step += 1
        let correction1 = 1 - Float(pow(Double(beta1), Double(step)))
        let correction2 = 1 - Float(pow(Double(beta2), Double(step)))
        let stepSize = learningRate / correction1
        let b1 = beta1, b2 = beta2, eps = epsilon
        parameters.withUnsafeMutableBufferPointer { p in
            gradient.withUnsafeBufferPointer { g in
                firstMoment.withUnsafeMutableBufferPointer { m in
                    secondMoment.withUnsafeMutableBufferPointer { v in
                        for index in 0..<p.count {
                            let gi = g[index]
                            m[index] = b1 * m[index] + (1 - b1) * gi
                            v[index] = b2 * v[index] + (1 - b2) * gi * gi
                            p[index] -= stepSize * m[index] / ((v[index] / correction2).squareRoot() + eps)
                        }
                    }
                }
            }
        }
    }
}

/// Full-batch limited-memory BFGS with a strong-Wolfe line search (Nocedal & Wright, Alg. 7.4, 3.5 and 3.6).
///
/// One `step()` is one iteration; the caller owns the loop so it can report, validate and
/// checkpoint between iterations. The state needed to continue bit-for-bit is `parameters`
/// plus the curvature pairs `s` and `y`: the value and gradient are re-evaluated on resume.
struct LBFGS {
    /// Why an iteration ended the optimisation.
    enum Outcome: Equatable {
        case progressed
        case converged(String)
    }

    /// Objective and gradient at a point; the closure writes the gradient into its second argument.
    typealias Evaluate = (_ parameters: [Float], _ gradient: inout [Float]) -> ObjectiveValue

    let memory: Int
    let gradientTolerance: Float
    let lossTolerance: Double
    private(set) var parameters: [Float]
    private(set) var gradient: [Float]
    private(set) var value: ObjectiveValue
    /// Parameter differences x_{k+1} − x_k, oldest first.
    private(set) var s: [[Float]]
    /// Gradient differences g_{k+1} − g_k, oldest first.
    private(set) var y: [[Float]]
    private var rho: [Double]
    let evaluate: Evaluate

    private let sufficientDecrease = 1e-4
    private let curvature = 0.9
    private let maxLineSearchEvaluations = 25

    init(parameters: [Float], s: [[Float]] = [], y: [[Float]] = [], memory: Int,
         gradientTolerance: Float, lossTolerance: Double, evaluate: @escaping Evaluate) {
        self.memory = max(1, memory)
        self.gradientTolerance = gradientTolerance
        self.lossTolerance = lossTolerance
        self.evaluate = evaluate
        self.parameters = parameters
        var gradient = [Float](repeating: 0, count: parameters.count)
        value = evaluate(parameters, &gradient)
        self.gradient = gradient
        self.s = s
        self.y = y
        rho = zip(s, y).map { 1 / $0.dot($1) }
    }

    /// True when the current point already satisfies the gradient tolerance.
    var gradientConverged: Bool { gradient.maxAbs <= gradientTolerance }

    /// One iteration: direction by the two-loop recursion, then a Wolfe line search.
    mutating func step() -> Outcome {
        if gradientConverged { return .converged("gradient max-norm \(gradient.maxAbs) ≤ \(gradientTolerance)") }
        var direction = searchDirection()
        var slope = direction.dot(gradient)
        if !(slope < 0) {
            // Float round-off can make the quasi-Newton direction uphill; steepest descent never is.
            clearHistory()
            direction = gradient.map { -$0 }
            slope = direction.dot(gradient)
        }
        let initialStep: Float = s.isEmpty ? min(1, 1 / Float(gradient.dot(gradient).squareRoot())) : 1
        guard var accepted = lineSearch(direction: direction, slope: slope, initialStep: initialStep) else {
            if s.isEmpty { return .converged("line search found no decrease along steepest descent (float precision reached)") }
            clearHistory()
            return step()
        }
        let previous = value.objective
        var stepVector = accepted.parameters
        stepVector.addScaled(-1, parameters)
        var gradientChange = accepted.gradient
        gradientChange.addScaled(-1, gradient)
        let sy = stepVector.dot(gradientChange)
        // Pairs without positive curvature would make the inverse-Hessian estimate indefinite.
        if sy > 1e-10 * gradientChange.dot(gradientChange) {
            s.append(stepVector)
            y.append(gradientChange)
            rho.append(1 / sy)
            if s.count > memory {
                s.removeFirst()
                y.removeFirst()
                rho.removeFirst()
            }
        }
        swap(&parameters, &accepted.parameters)
        swap(&gradient, &accepted.gradient)
        value = accepted.value
        let decrease = previous - value.objective
        if decrease <= lossTolerance * max(abs(previous), abs(value.objective), 1) {
            return .converged("objective change \(decrease) below tolerance")
        }
        if gradientConverged { return .converged("gradient max-norm \(gradient.maxAbs) ≤ \(gradientTolerance)") }
        return .progressed
    }

    private mutating func clearHistory() {
        s.removeAll()
        y.removeAll()
        rho.removeAll()
    }

    /// −H·g by the two-loop recursion, with H₀ = (sᵀy / yᵀy)·I from the newest pair.
    private func searchDirection() -> [Float] {
        var q = gradient
        var alpha = [Double](repeating: 0, count: s.count)
        for index in stride(from: s.count - 1, through: 0, by: -1) {
            alpha[index] = rho[index] * s[index].dot(q)
            q.addScaled(Float(-alpha[index]), y[index])
        }
        if let lastS = s.last, let lastY = y.last {
            let gamma = Float(lastS.dot(lastY) / lastY.dot(lastY))
            for index in q.indices { q[index] *= gamma }
        }
        for index in 0..<s.count {
            let beta = rho[index] * y[index].dot(q)
            q.addScaled(Float(alpha[index] - beta), s[index])
        }
        for index in q.indices { q[index] = -q[index] }
        return q
    }

    private struct Trial {
        var step: Float
        var parameters: [Float]
        var gradient: [Float]
        var value: ObjectiveValue
        var slope: Double
    }

    private func trial(at step: Float, direction: [Float]) -> Trial {
        var point = parameters
        point.addScaled(step, direction)
        var trialGradient = [Float](repeating: 0, count: point.count)
        let trialValue = evaluate(point, &trialGradient)
        return Trial(step: step, parameters: point, gradient: trialGradient, value: trialValue,
                     slope: trialGradient.dot(direction))
    }

    /// A step satisfying the strong Wolfe conditions, or the best sufficient-decrease point seen,
    /// or `nil` when no tried step decreased the objective.
    private func lineSearch(direction: [Float], slope: Double, initialStep: Float) -> Trial? {
        let f0 = value.objective
        var evaluations = 0
        var bestArmijo: Trial?
        func armijo(_ t: Trial) -> Bool { t.value.objective <= f0 + sufficientDecrease * Double(t.step) * slope }
        func wolfe(_ t: Trial) -> Bool { abs(t.slope) <= -curvature * slope }
        func remember(_ t: Trial) {
            if armijo(t), t.value.objective < (bestArmijo?.value.objective ?? f0) { bestArmijo = t }
        }

        func zoom(_ lowIn: Trial?, _ highIn: Trial?, lowStep: Float, highStep: Float) -> Trial? {
            // `nil` low stands for step 0 (the current point), known by f0 and slope.
            var low = lowIn, high = highIn
            var lo = lowStep, hi = highStep
            while evaluations < maxLineSearchEvaluations {
                let fLo = low?.value.objective ?? f0, dLo = low?.slope ?? slope
                let fHi = high?.value.objective ?? f0, dHi = high?.slope ?? slope
                var next = cubicMinimizer(a: lo, fa: fLo, da: dLo, b: hi, fb: fHi, db: dHi)
                let width = hi - lo
                let inner = min(lo, hi) + 0.1 * abs(width), outer = max(lo, hi) - 0.1 * abs(width)
                if !(next.isFinite && next >= inner && next <= outer) { next = lo + 0.5 * width }
                if abs(width) < 1e-12 * max(1, abs(lo)) { break }
                let t = trial(at: next, direction: direction)
                evaluations += 1
                remember(t)
                if !armijo(t) || t.value.objective >= fLo {
                    high = t; hi = next
                } else {
                    if wolfe(t) { return t }
                    if t.slope * Double(hi - lo) >= 0 { high = low; hi = lo }
                    low = t; lo = next
                }
            }
            return bestArmijo
        }

        var previous: Trial?
        var previousStep: Float = 0
        var step = initialStep
        while evaluations < maxLineSearchEvaluations {
            let t = trial(at: step, direction: direction)
            evaluations += 1
            remember(t)
            if !t.value.objective.isFinite || !armijo(t) || (previous != nil && t.value.objective >= previous!.value.objective) {
                return zoom(previous, t, lowStep: previousStep, highStep: step)
            }
            if wolfe(t) { return t }
            if t.slope >= 0 { return zoom(t, previous, lowStep: step, highStep: previousStep) }
            previous = t
            previousStep = step
            step *= 2
        }
        return bestArmijo
    }

    /// Minimiser of the cubic matching values and slopes at a and b (Nocedal & Wright eq. 3.59).
    private func cubicMinimizer(a: Float, fa: Double, da: Double, b: Float, fb: Double, db: Double) -> Float {
        let d1 = da + db - 3 * (fa - fb) / Double(a - b)
        let radicand = d1 * d1 - da * db
        guard radicand >= 0 else { return .nan }
        let d2 = (Double(b - a) >= 0 ? 1.0 : -1.0) * radicand.squareRoot()
        let denominator = db - da + 2 * d2
        guard denominator != 0 else { return .nan }
        return Float(Double(b) - Double(b - a) * (db + d2 - d1) / denominator)
    }
}
