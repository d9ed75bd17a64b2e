import Foundation

/// Everything a training run reports, in a form that round-trips through JSON and renders as one
/// self-contained HTML page (`writeJSON(to:)`, `writeHTML(to:)`).
public struct ReportData: Codable, Sendable, Equatable {
    /// Metrics for one training epoch; validation values are nil when the run had no validation split.
    public struct Epoch: Codable, Sendable, Equatable {
        /// 1-based epoch number, the x axis of the curves.
        public var epoch: Int
        /// Mean training loss over the epoch.
        public var trainLoss: Double
        /// Training accuracy in 0…1.
        public var trainAccuracy: Double
        /// Validation loss after the epoch.
        public var validationLoss: Double?
        /// Validation accuracy in 0…1 after the epoch.
        public var validationAccuracy: Double?

        /// Gathers one epoch's metrics.
        public init(epoch: Int, trainLoss: Double, trainAccuracy: Double, validationLoss: Double? = nil, validationAccuracy: Double? = nil) {
            self.epoch = epoch
            self.trainLoss = trainLoss
            self.trainAccuracy = trainAccuracy
            self.validationLoss = validationLoss
            self.validationAccuracy = validationAccuracy
        }
    }

    /// The final evaluation on held-out data.
    public struct Evaluation: Codable, Sendable, Equatable {
        /// Class names; index `i` names row and column `i` of `confusion`.
        public var classNames: [String]
        /// Top-1 accuracy in 0…1.
        public var top1: Double
        /// Top-5 accuracy in 0…1 (equal to 1 when there are at most five classes).
        public var top5: Double
        /// Precision per class in 0…1, nil-free: a class never predicted reports 0.
        public var perClassPrecision: [Double]
        /// Recall per class in 0…1.
        public var perClassRecall: [Double]
        /// `confusion[t][p]` counts examples of true class `t` predicted as `p`.
        public var confusion: [[Int]]

        /// Gathers the evaluation; `writeHTML` tolerates ragged or short arrays by showing what exists.
        public init(classNames: [String], top1: Double, top5: Double, perClassPrecision: [Double], perClassRecall: [Double], confusion: [[Int]]) {
            self.classNames = classNames
            self.top1 = top1
            self.top5 = top5
            self.perClassPrecision = perClassPrecision
            self.perClassRecall = perClassRecall
            self.confusion = confusion
        }
    }

    /// One throughput measurement of one worker.
    public struct ThroughputSample: Codable, Sendable, Equatable {
        /// Seconds since the run started.
        public var seconds: Double
        /// Images per second around that moment.
        public var imagesPerSecond: Double

        /// Gathers one measurement.
        public init(seconds: Double, imagesPerSecond: Double) {
            self.seconds = seconds
            self.imagesPerSecond = imagesPerSecond
        }
    }

    /// An input that was skipped, and why.
    public struct DeadLetter: Codable, Sendable, Equatable {
        /// The dataset key of the skipped input.
        public var key: String
        /// Why it was skipped, as the decoder reported it.
        public var reason: String

        /// Gathers one dead letter.
        public init(key: String, reason: String) {
            self.key = key
            self.reason = reason
        }
    }

    /// One L2 value tried while choosing the penalty on validation.
    public struct L2Point: Codable, Sendable, Equatable {
        /// The L2 strength.
        public var l2: Double
        /// Validation top-1 in 0…1 of the model trained at this strength.
        public var validationAccuracy: Double
        /// Validation cross-entropy of that model.
        public var validationLoss: Double
        /// Training cross-entropy at the end of the fit, when measured.
        public var trainLoss: Double?
        /// Optimiser iterations the fit took (warm-started from the previous value).
        public var iterations: Int

        /// Gathers one point of the sweep.
        public init(l2: Double, validationAccuracy: Double, validationLoss: Double, trainLoss: Double? = nil, iterations: Int) {
            self.l2 = l2
            self.validationAccuracy = validationAccuracy
            self.validationLoss = validationLoss
            self.trainLoss = trainLoss
            self.iterations = iterations
        }
    }

    /// One labelled line of the run summary (for example "backbone" → "efficientnet-lite0").
    public struct SummaryEntry: Codable, Sendable, Equatable {
        /// What the value is.
        public var label: String
        /// The value, already formatted.
        public var value: String

        /// Gathers one summary line.
        public init(label: String, value: String) {
            self.label = label
            self.value = value
        }
    }

    /// Heading of the report.
    public var title: String
    /// Labelled facts about the run, shown in order at the top.
    public var summary: [SummaryEntry]
    /// Per-epoch metrics in training order.
    public var epochs: [Epoch]
    /// The final evaluation, nil when none ran.
    public var evaluation: Evaluation?
    /// Throughput samples by worker name, each list in time order.
    public var throughput: [String: [ThroughputSample]]
    /// Inputs skipped during extraction.
    public var deadLetters: [DeadLetter]
    /// The L2 values tried on validation, strongest first; nil when L2 was given.
    public var l2Sweep: [L2Point]?
    /// The L2 kept from `l2Sweep`.
    public var chosenL2: Double?
    /// The epoch whose weights were kept (the best on validation when training stopped early); nil when not epoch-based.
    public var keptEpoch: Int?
    /// How the head was fitted, for benchmarks: wall time, passes over the training rows, and whether
    /// the rows were streamed from the store on every pass (beyond the memory budget).
    public var fit: FitFacts?

    /// Cost facts of the fit.
    public struct FitFacts: Codable, Sendable, Equatable {
        /// Wall time from the start of training to the model (without export and report).
        public var seconds: Double
        /// Objective evaluations, each one pass over the rows (nil for epoch-based fits).
        public var passes: Int?
        /// Rows streamed from the store on every pass rather than held in memory.
        public var streamed: Bool
        /// The memory budget for feature rows, in bytes.
        public var memoryBudget: Int?

        /// Gathers the facts.
        public init(seconds: Double, passes: Int?, streamed: Bool, memoryBudget: Int?) {
            self.seconds = seconds
            self.passes = passes
            self.streamed = streamed
            self.memoryBudget = memoryBudget
        }
    }

    /// Gathers a report; everything but the title may be empty.
    public init(
        title: String = "FeatureStream training report", summary: [SummaryEntry] = [], epochs: [Epoch] = [],
        evaluation: Evaluation? = nil, throughput: [String: [ThroughputSample]] = [:], deadLetters: [DeadLetter] = []
    ) {
        self.title = title
        self.summary = summary
        self.epochs = epochs
        self.evaluation = evaluation
        self.throughput = throughput
        self.deadLetters = deadLetters
    }

    /// Writes the report as pretty-printed JSON with sorted keys. A diverged run's NaN or infinite
    /// losses are written as the strings "NaN", "Infinity" and "-Infinity" rather than failing;
    /// `decodeJSON(_:)` reads them back.
    public func writeJSON(to url: URL) throws {
        try Self.encoder().encode(self).write(to: url, options: .atomic)
    }

    /// Reads a report written by `writeJSON(to:)`.
    public static func decodeJSON(_ data: Data) throws -> ReportData {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return try decoder.decode(ReportData.self, from: data)
    }

    /// Writes the report as one HTML file with inline CSS and SVG and no external resources, so it
    /// opens offline and can be mailed or archived as is. All data-derived text is HTML-escaped.
    public func writeHTML(to url: URL) throws {
        try Data(html().utf8).write(to: url, options: .atomic)
    }

    /// The HTML `writeHTML(to:)` writes.
    public func html() -> String {
        ReportRenderer(report: self).render()
    }

    private static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return encoder
    }
}

/// Escapes text for HTML and SVG content and attribute values.
func escapeHTML(_ text: String) -> String {
    var result = ""
    result.reserveCapacity(text.utf8.count)
    for character in text {
        switch character {
        case "&": result += "&amp;"
        case "<": result += "&lt;"
        case ">": result += "&gt;"
        case "\"": result += "&quot;"
        case "'": result += "&#39;"
        default: result.append(character)
        }
    }
    return result
}

private struct ReportRenderer {
    let report: ReportData
    /// Beyond this the table would dwarf the page; the JSON keeps every entry.
    let deadLetterRowLimit = 500

    func render() -> String {
        var body = ""
        body += "<header><h1>\(escapeHTML(report.title))</h1></header>\n"
        body += cards()
        if !report.summary.isEmpty {
            body += "<section><h2>Summary</h2><dl class=\"summary\">"
            for entry in report.summary {
                body += "<dt>\(escapeHTML(entry.label))</dt><dd>\(escapeHTML(entry.value))</dd>"
            }
            body += "</dl></section>\n"
        }
        body += regularisationSection()
        body += trainingCurves()
        body += evaluationSection()
        body += throughputSection()
        body += deadLetterSection()
        return """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <title>\(escapeHTML(report.title))</title>
        <style>\(Self.styleSheet)</style>
        </head>
        <body>
        <main>
        \(body)
        </main>
        </body>
        </html>

        """
    }

    static let styleSheet = """
    :root { color-scheme: light; --ink: #1f2933; --muted: #616e7c; --line: #e4e7eb; --panel: #ffffff; --bg: #f5f7fa; --accent: #2563eb; }
    * { box-sizing: border-box; }
    body { margin: 0; background: var(--bg); color: var(--ink); font: 14px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; }
    main { max-width: 1120px; margin: 0 auto; padding: 24px; }
    h1 { font-size: 24px; margin: 0 0 16px; }
    h2 { font-size: 17px; margin: 0 0 12px; }
    section, .cards > div { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; }
    section { padding: 16px 20px; margin: 0 0 16px; }
    .cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin-bottom: 16px; }
    .cards > div { padding: 12px 16px; }
    .cards .value { font-size: 24px; font-weight: 600; }
    .cards .label { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
    .pair { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
    figure { margin: 0; }
    figcaption { font-weight: 600; margin-bottom: 4px; }
    svg { display: block; max-width: 100%; height: auto; }
    svg text { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; fill: var(--ink); }
    dl.summary { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0; }
    dl.summary dt { color: var(--muted); }
    dl.summary dd { margin: 0; word-break: break-word; }
    table { border-collapse: collapse; width: 100%; font-size: 13px; }
    th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
    th { color: var(--muted); font-weight: 600; }
    td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
    td.key { font-family: ui-monospace, "DejaVu Sans Mono", monospace; word-break: break-all; }
    .scroll { max-height: 420px; overflow: auto; }
    .empty, .note { color: var(--muted); }
    """

    func cards() -> String {
        var items: [(String, String)] = []
        if let evaluation = report.evaluation {
            items.append(("Top-1 accuracy", percent(evaluation.top1)))
            items.append(("Top-5 accuracy", percent(evaluation.top5)))
        }
        if let chosen = report.chosenL2 { items.append(("Chosen L2", String(format: "%g", chosen))) }
        if let kept = report.keptEpoch { items.append(("Kept epoch", "\(kept) of \(report.epochs.count)")) }
        if let last = report.epochs.last {
            items.append(("Epochs", "\(report.epochs.count)"))
            items.append(("Final val loss", last.validationLoss.map { decimal($0, digits: 4) } ?? decimal(last.trainLoss, digits: 4)))
        }
        items.append(("Dead letters", "\(report.deadLetters.count)"))
        let peak = report.throughput.values.joined().map(\.imagesPerSecond).filter(\.isFinite).max()
        if let peak { items.append(("Peak images/s", decimal(peak, digits: 0))) }
        let shown = items.prefix(8)
        return "<div class=\"cards\">" + shown.map {
            "<div><div class=\"label\">\(escapeHTML($0.0))</div><div class=\"value\">\(escapeHTML($0.1))</div></div>"
        }.joined() + "</div>\n"
    }

    func trainingCurves() -> String {
        let epochs = report.epochs
        guard !epochs.isEmpty else {
            return "<section><h2>Training</h2><p class=\"empty\">No epochs were recorded.</p></section>\n"
        }
        let x = epochs.map { Double($0.epoch) }
        let loss = SVGChart.lineChart(
            series: [
                .init(name: "train", color: Palette.train, points: zip(x, epochs.map(\.trainLoss)).map { ($0, $1) }),
                .init(name: "validation", color: Palette.validation, points: zip(x, epochs.map(\.validationLoss)).compactMap { x, y in y.map { (x, $0) } }),
            ].filter { !$0.points.isEmpty },
            xLabel: "epoch", yLabel: "loss", integerX: true)
        let accuracy = SVGChart.lineChart(
            series: [
                .init(name: "train", color: Palette.train, points: zip(x, epochs.map { $0.trainAccuracy * 100 }).map { ($0, $1) }),
                .init(name: "validation", color: Palette.validation, points: zip(x, epochs.map(\.validationAccuracy)).compactMap { x, y in y.map { (x, $0 * 100) } }),
            ].filter { !$0.points.isEmpty },
            xLabel: "epoch", yLabel: "accuracy (%)", integerX: true)
        let kept = report.keptEpoch.map { epoch -> String in
            let last = epochs.last!.epoch
            return epoch == last ? "<p class=\"note\">The weights of the last epoch (\(epoch)) were kept.</p>"
                : "<p class=\"note\">The weights of epoch \(epoch), the lowest validation loss, were kept; training went on to epoch \(last) to make sure it would not improve.</p>"
        } ?? ""
        return """
        <section><h2>Training</h2>\(kept)<div class="pair">
        <figure><figcaption>Loss</figcaption>\(loss)</figure>
        <figure><figcaption>Accuracy</figcaption>\(accuracy)</figure>
        </div></section>

        """
    }

    func regularisationSection() -> String {
        guard let sweep = report.l2Sweep, !sweep.isEmpty else { return "" }
        let x = sweep.map { log10(max($0.l2, 1e-12)) }
        let accuracy = SVGChart.lineChart(
            series: [.init(name: "validation", color: Palette.validation, points: zip(x, sweep.map { $0.validationAccuracy * 100 }).map { ($0, $1) })],
            xLabel: "log10 L2", yLabel: "accuracy (%)")
        let loss = SVGChart.lineChart(
            series: [.init(name: "validation", color: Palette.validation, points: zip(x, sweep.map(\.validationLoss)).map { ($0, $1) }),
                     .init(name: "train", color: Palette.train, points: zip(x, sweep.map(\.trainLoss)).compactMap { x, y in y.map { (x, $0) } })]
                .filter { !$0.points.isEmpty },
            xLabel: "log10 L2", yLabel: "loss")
        var html = """
        <section><h2>Regularisation chosen on validation</h2>
        <p class="note">Each L2 value was fitted warm-started from the previous, stronger one; the kept value has the best validation top-1 (ties: the lower loss).</p>
        <div class="pair"><figure><figcaption>Validation accuracy</figcaption>\(accuracy)</figure>
        <figure><figcaption>Loss</figcaption>\(loss)</figure></div>
        <table><thead><tr><th class="num">L2</th><th class="num">validation top-1</th><th class="num">validation loss</th><th class="num">train loss</th><th class="num">iterations</th><th></th></tr></thead><tbody>
        """
        for point in sweep {
            let kept = report.chosenL2.map { Float($0) == Float(point.l2) } ?? false
            html += "<tr><td class=\"num\">\(String(format: "%g", point.l2))</td><td class=\"num\">\(percent(point.validationAccuracy))</td>"
                + "<td class=\"num\">\(decimal(point.validationLoss, digits: 4))</td><td class=\"num\">\(point.trainLoss.map { decimal($0, digits: 4) } ?? "–")</td>"
                + "<td class=\"num\">\(point.iterations)</td><td>\(kept ? "kept" : "")</td></tr>"
        }
        return html + "</tbody></table></section>\n"
    }

    func evaluationSection() -> String {
        guard let evaluation = report.evaluation else { return "" }
        var html = "<section><h2>Confusion matrix</h2>"
        html += "<p class=\"note\">Rows are true classes, columns predictions; shading is the share of the true class.</p>"
        html += SVGChart.heatMap(matrix: evaluation.confusion, labels: evaluation.classNames)
        html += "</section>\n<section><h2>Per-class metrics</h2><div class=\"scroll\"><table><thead><tr>"
        html += "<th>class</th><th class=\"num\">precision</th><th class=\"num\">recall</th><th class=\"num\">support</th></tr></thead><tbody>"
        let rows = max(evaluation.classNames.count, evaluation.perClassPrecision.count, evaluation.perClassRecall.count)
        for index in 0..<rows {
            let name = index < evaluation.classNames.count ? evaluation.classNames[index] : "class \(index)"
            let precision = index < evaluation.perClassPrecision.count ? percent(evaluation.perClassPrecision[index]) : "–"
            let recall = index < evaluation.perClassRecall.count ? percent(evaluation.perClassRecall[index]) : "–"
            let support = index < evaluation.confusion.count ? "\(evaluation.confusion[index].reduce(0, +))" : "–"
            html += "<tr><td>\(escapeHTML(name))</td><td class=\"num\">\(precision)</td><td class=\"num\">\(recall)</td><td class=\"num\">\(support)</td></tr>"
        }
        html += "</tbody></table></div></section>\n"
        return html
    }

    func throughputSection() -> String {
        guard !report.throughput.isEmpty else { return "" }
        let series = report.throughput.keys.sorted().enumerated().map { index, worker in
            SVGChart.Series(
                name: worker, color: Palette.categorical[index % Palette.categorical.count],
                points: report.throughput[worker]!.map { ($0.seconds, $0.imagesPerSecond) })
        }
        let chart = SVGChart.lineChart(series: series, xLabel: "time (s)", yLabel: "images / s", width: 1060, height: 300, yStartsAtZero: true)
        return "<section><h2>Throughput per worker</h2>\(chart)</section>\n"
    }

    func deadLetterSection() -> String {
        let letters = report.deadLetters
        var html = "<section><h2>Dead letters (\(letters.count))</h2>"
        guard !letters.isEmpty else { return html + "<p class=\"empty\">Every input was processed.</p></section>\n" }
        html += "<div class=\"scroll\"><table><thead><tr><th>key</th><th>reason</th></tr></thead><tbody>"
        for letter in letters.prefix(deadLetterRowLimit) {
            html += "<tr><td class=\"key\">\(escapeHTML(letter.key))</td><td>\(escapeHTML(letter.reason))</td></tr>"
        }
        html += "</tbody></table></div>"
        if letters.count > deadLetterRowLimit {
            html += "<p class=\"note\">Showing the first \(deadLetterRowLimit) of \(letters.count); the JSON report lists all.</p>"
        }
        return html + "</section>\n"
    }
}

func percent(_ fraction: Double) -> String {
    fraction.isFinite ? String(format: "%.1f%%", fraction * 100) : "–"
}

func decimal(_ value: Double, digits: Int) -> String {
    value.isFinite ? String(format: "%.\(digits)f", value) : String(describing: value)
}

enum Palette {
    static let train = "#2563eb"
    static let validation = "#ea580c"
    static let categorical = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777", "#4b5563", "#65a30d"]
}
