import Foundation

/// Inline SVG drawing for the HTML report; produced as strings so the report has no dependencies.
enum SVGChart {
    struct Series {
        var name: String
        var color: String
        var points: [(x: Double, y: Double)]
    }

    /// A line chart with gridlines, ticks, axis titles and a legend. Non-finite points break a line
    /// instead of poisoning the axis range, and a lone point still shows as a marker.
    static func lineChart(
        series: [Series], xLabel: String, yLabel: String, width: Double = 520, height: Double = 300,
        integerX: Bool = false, yStartsAtZero: Bool = false
    ) -> String {
        let left = 58.0, right = 16.0, top = 30.0, bottom = 44.0
        let plotWidth = width - left - right, plotHeight = height - top - bottom
        let finite = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(f(width)) \(f(height))\" width=\"\(f(width))\" height=\"\(f(height))\" role=\"img\" aria-label=\"\(escapeHTML(yLabel)) against \(escapeHTML(xLabel))\">"
        guard !finite.isEmpty else {
            return svg + "<text x=\"\(f(width / 2))\" y=\"\(f(height / 2))\" text-anchor=\"middle\" font-size=\"13\" style=\"fill:#616e7c\">no data</text></svg>"
        }
        // The x axis spans exactly the data (time and epochs have no "nice" end worth empty space);
        // the y axis extends to round ticks so gridlines label the values.
        let xLower = finite.map(\.x).min()!, xUpper = finite.map(\.x).max()!
        let xRange = xUpper > xLower ? (xLower, xUpper) : (xLower - 0.5, xLower + 0.5)
        let slack = (xRange.1 - xRange.0) * 1e-9
        var xTicks = niceTicks(lower: xRange.0, upper: xRange.1).filter { $0 >= xRange.0 - slack && $0 <= xRange.1 + slack }
        if integerX { xTicks = xTicks.filter { $0 == $0.rounded() } }
        if xTicks.isEmpty { xTicks = xUpper > xLower ? [xLower, xUpper] : [xLower] }
        let yTicks = niceTicks(lower: yStartsAtZero ? min(0, finite.map(\.y).min()!) : finite.map(\.y).min()!, upper: finite.map(\.y).max()!)
        let yRange = (yTicks.first!, max(yTicks.last!, yTicks.first! + 1e-12))
        func px(_ x: Double) -> Double {
            left + (x - xRange.0) / (xRange.1 - xRange.0) * plotWidth
        }
        func py(_ y: Double) -> Double {
            top + plotHeight - (y - yRange.0) / (yRange.1 - yRange.0) * plotHeight
        }

        svg += "<g font-size=\"11\">"
        for tick in yTicks {
            svg += "<line x1=\"\(f(left))\" x2=\"\(f(left + plotWidth))\" y1=\"\(f(py(tick)))\" y2=\"\(f(py(tick)))\" stroke=\"#e4e7eb\"/>"
            svg += "<text x=\"\(f(left - 6))\" y=\"\(f(py(tick) + 4))\" text-anchor=\"end\">\(label(tick, step: yTicks))</text>"
        }
        for tick in xTicks {
            svg += "<line x1=\"\(f(px(tick)))\" x2=\"\(f(px(tick)))\" y1=\"\(f(top + plotHeight))\" y2=\"\(f(top + plotHeight + 4))\" stroke=\"#9aa5b1\"/>"
            svg += "<text x=\"\(f(px(tick)))\" y=\"\(f(top + plotHeight + 17))\" text-anchor=\"middle\">\(label(tick, step: xTicks))</text>"
        }
        svg += "</g>"
        svg += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(plotWidth))\" height=\"\(f(plotHeight))\" fill=\"none\" stroke=\"#9aa5b1\"/>"
        svg += "<text x=\"\(f(left + plotWidth / 2))\" y=\"\(f(height - 6))\" text-anchor=\"middle\" font-size=\"12\">\(escapeHTML(xLabel))</text>"
        svg += "<text transform=\"translate(14 \(f(top + plotHeight / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\">\(escapeHTML(yLabel))</text>"

        for line in series {
            var segments: [[(x: Double, y: Double)]] = [[]]
            for point in line.points {
                if point.x.isFinite && point.y.isFinite { segments[segments.count - 1].append(point) } else if !segments[segments.count - 1].isEmpty { segments.append([]) }
            }
            svg += "<g><title>\(escapeHTML(line.name))</title>"
            for segment in segments where !segment.isEmpty {
                let path = segment.map { "\(f(px($0.x))),\(f(py($0.y)))" }.joined(separator: " ")
                svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(line.color)\" stroke-width=\"2\" stroke-linejoin=\"round\"/>"
                // Few points read better with markers; hundreds would only smear the line.
                if segment.count <= 40 {
                    for point in segment {
                        svg += "<circle cx=\"\(f(px(point.x)))\" cy=\"\(f(py(point.y)))\" r=\"2.5\" fill=\"\(line.color)\"/>"
                    }
                }
            }
            svg += "</g>"
        }

        // The legend sits above the plot so it never hides data.
        var legendX = left
        for line in series {
            svg += "<line x1=\"\(f(legendX))\" x2=\"\(f(legendX + 18))\" y1=\"14\" y2=\"14\" stroke=\"\(line.color)\" stroke-width=\"3\"/>"
            svg += "<text x=\"\(f(legendX + 23))\" y=\"18\" font-size=\"12\">\(escapeHTML(line.name))</text>"
            legendX += 23 + Double(line.name.count) * 7 + 18
        }
        return svg + "</svg>"
    }

    /// A confusion-matrix heat map shaded by each row's share, with class labels, cell counts when
    /// cells are large enough to hold them, and a tooltip per cell.
    static func heatMap(matrix: [[Int]], labels: [String]) -> String {
        let n = max(matrix.count, matrix.map(\.count).max() ?? 0)
        guard n > 0 else { return "<p class=\"empty\">The confusion matrix is empty.</p>" }
        let cell = min(40, max(3, (720.0 / Double(n)).rounded(.down)))
        let showLabels = cell >= 10
        let showCounts = cell >= 26
        func name(_ index: Int) -> String { index < labels.count ? labels[index] : "class \(index)" }
        func shortName(_ index: Int) -> String {
            let full = name(index)
            return full.count > 20 ? String(full.prefix(19)) + "…" : full
        }
        let longest = showLabels ? Double((0..<n).map { shortName($0).count }.max() ?? 0) : 0
        let labelSpace = showLabels ? 16 + longest * 6.6 : 8
        let left = 24 + labelSpace, top = 28.0
        // Column labels are rotated 45°, so their footprint is the text length over √2.
        let bottom = (showLabels ? 14 + longest * 6.6 * 0.72 : 8) + 22
        let legendWidth = 90.0
        let width = left + cell * Double(n) + legendWidth
        let height = top + cell * Double(n) + bottom

        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(f(width)) \(f(height))\" width=\"\(f(width))\" height=\"\(f(height))\" role=\"img\" aria-label=\"confusion matrix\">"
        svg += "<defs><linearGradient id=\"heat-scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\"><stop offset=\"0\" stop-color=\"\(shade(0))\"/><stop offset=\"0.5\" stop-color=\"\(shade(0.5))\"/><stop offset=\"1\" stop-color=\"\(shade(1))\"/></linearGradient></defs>"
        svg += "<text x=\"\(f(left + cell * Double(n) / 2))\" y=\"16\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"600\">predicted</text>"
        svg += "<text transform=\"translate(12 \(f(top + cell * Double(n) / 2))) rotate(-90)\" text-anchor=\"middle\" font-size=\"12\" font-weight=\"600\">true</text>"
        // With many classes, drawing every empty cell would make the page grow with n² (a million
        // rects for ImageNet); one background rect stands in for all the zeros instead.
        let drawsEmptyCells = n <= 60
        if !drawsEmptyCells {
            svg += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(cell * Double(n)))\" height=\"\(f(cell * Double(n)))\" fill=\"\(shade(0))\"/>"
        }
        for row in 0..<n {
            let counts = row < matrix.count ? matrix[row] : []
            let total = counts.reduce(0, +)
            for column in 0..<n {
                let count = column < counts.count ? counts[column] : 0
                if count == 0 && !drawsEmptyCells { continue }
                let share = total > 0 ? Double(count) / Double(total) : 0
                let x = left + Double(column) * cell, y = top + Double(row) * cell
                svg += "<rect x=\"\(f(x))\" y=\"\(f(y))\" width=\"\(f(cell))\" height=\"\(f(cell))\" fill=\"\(shade(share))\" stroke=\"#ffffff\" stroke-width=\"\(cell >= 8 ? 1 : 0)\">"
                svg += "<title>true \(escapeHTML(name(row))) → predicted \(escapeHTML(name(column))): \(count) (\(percent(share)) of the row)</title></rect>"
                if showCounts && count > 0 {
                    let ink = share > 0.5 ? "#ffffff" : "#1f2933"
                    svg += "<text x=\"\(f(x + cell / 2))\" y=\"\(f(y + cell / 2 + 4))\" text-anchor=\"middle\" font-size=\"11\" style=\"fill:\(ink)\">\(count)</text>"
                }
            }
        }
        if showLabels {
            let fontSize = min(12, cell - 1)
            for index in 0..<n {
                let text = escapeHTML(shortName(index))
                let y = top + (Double(index) + 0.5) * cell
                svg += "<text x=\"\(f(left - 6))\" y=\"\(f(y + fontSize / 3))\" text-anchor=\"end\" font-size=\"\(f(fontSize))\">\(text)</text>"
                let x = left + (Double(index) + 0.5) * cell
                let baseY = top + cell * Double(n) + 8
                svg += "<text transform=\"translate(\(f(x + fontSize / 3)) \(f(baseY))) rotate(-45)\" text-anchor=\"end\" font-size=\"\(f(fontSize))\">\(text)</text>"
            }
        }
        let scaleX = left + cell * Double(n) + 24, scaleHeight = min(160, cell * Double(n))
        svg += "<rect x=\"\(f(scaleX))\" y=\"\(f(top))\" width=\"14\" height=\"\(f(scaleHeight))\" fill=\"url(#heat-scale)\" stroke=\"#9aa5b1\"/>"
        svg += "<text x=\"\(f(scaleX + 20))\" y=\"\(f(top + 10))\" font-size=\"11\">100%</text>"
        svg += "<text x=\"\(f(scaleX + 20))\" y=\"\(f(top + scaleHeight))\" font-size=\"11\">0%</text>"
        return svg + "</svg>"
    }

    /// White through blue, the sequential scale colour-blind readers distinguish best.
    static func shade(_ share: Double) -> String {
        let t = min(1, max(0, share.isFinite ? share : 0))
        let low = (247.0, 251.0, 255.0), high = (8.0, 48.0, 107.0)
        let r = low.0 + (high.0 - low.0) * t, g = low.1 + (high.1 - low.1) * t, b = low.2 + (high.2 - low.2) * t
        return String(format: "#%02x%02x%02x", Int(r.rounded()), Int(g.rounded()), Int(b.rounded()))
    }

    /// About five evenly spaced round numbers (steps of 1, 2 or 5 × 10^k) covering lower…upper.
    static func niceTicks(lower: Double, upper: Double, count: Int = 5) -> [Double] {
        var lower = lower, upper = upper
        if upper - lower < 1e-12 * max(1, abs(lower)) {
            // A flat series still needs a visible band around it.
            let pad = lower == 0 ? 1 : abs(lower) * 0.1
            lower -= pad
            upper += pad
        }
        let rough = (upper - lower) / Double(count)
        let magnitude = pow(10, (log10(rough)).rounded(.down))
        let step = [1.0, 2, 5, 10].map { $0 * magnitude }.first { $0 >= rough } ?? 10 * magnitude
        let first = (lower / step).rounded(.down) * step
        let last = (upper / step).rounded(.up) * step
        let steps = Int(((last - first) / step).rounded())
        return (0...max(1, steps)).map { first + Double($0) * step }
    }

    private static func label(_ value: Double, step ticks: [Double]) -> String {
        let step = ticks.count > 1 ? abs(ticks[1] - ticks[0]) : 1
        let digits = step >= 1 ? 0 : min(6, Int((-log10(step)).rounded(.up)))
        let text = String(format: "%.\(digits)f", value)
        return text == "-0" ? "0" : text
    }

    private static func f(_ value: Double) -> String {
        let rounded = (value * 10).rounded() / 10
        return rounded == rounded.rounded() ? String(Int(rounded)) : String(format: "%.1f", rounded)
    }
}
