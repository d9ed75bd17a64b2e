import Foundation

/// Indexes CSV (`path,label[,split]` header) and JSONL (`{"path":…,"label":…,"split":…}`) manifests.
public enum ManifestReader {
    /// Reads the manifest at `path`. Relative image paths resolve against the manifest's folder; labels may be
    /// class names (classes sorted) or integers (classes "0"…"max"). Malformed lines become dead letters.
    public static func index(path: String) throws -> DatasetIndex {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DatasetError(reason: "cannot read manifest \(path)")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw DatasetError(reason: "manifest \(path) is not UTF-8")
        }
        let base = (path as NSString).deletingLastPathComponent
        let manifestName = (path as NSString).lastPathComponent
        let isCSV = (path as NSString).pathExtension.lowercased() == "csv"
        var rows: [(path: String, label: String?, split: String?)] = []
        var deadLetters: [DeadLetter] = []
        if isCSV {
            try parseCSV(text, manifestName: manifestName, into: &rows, deadLetters: &deadLetters)
        } else {
            parseJSONL(text, manifestName: manifestName, into: &rows, deadLetters: &deadLetters)
        }
        let (classes, labels) = resolveLabels(rows.map(\.label))
        let items = rows.enumerated().map { index, row in
            let resolved = row.path.hasPrefix("/") ? row.path : (base.isEmpty ? row.path : base + "/" + row.path)
            return DatasetItem(index: index, key: row.path, label: labels[index], split: row.split,
                               source: .file(path: resolved))
        }
        return DatasetIndex(format: .manifest, root: path, classes: classes, items: items, deadLetters: deadLetters)
    }

    private static func parseCSV(_ text: String, manifestName: String,
                                 into rows: inout [(path: String, label: String?, split: String?)],
                                 deadLetters: inout [DeadLetter]) throws {
        let records = csvRecords(text)
        guard let header = records.first?.fields.map({ $0.trimmingCharacters(in: .whitespaces).lowercased() }),
              let pathColumn = header.firstIndex(of: "path") else {
            throw DatasetError(reason: "manifest \(manifestName) needs a header row with a 'path' column")
        }
        let labelColumn = header.firstIndex(of: "label")
        let splitColumn = header.firstIndex(of: "split")
        for record in records.dropFirst() {
            let fields = record.fields
            if fields.count == 1 && fields[0].isEmpty { continue }
            guard fields.count > pathColumn, !fields[pathColumn].isEmpty else {
                deadLetters.append(DeadLetter(key: "\(manifestName):\(record.line)", reason: "row has no path"))
                continue
            }
            func field(_ column: Int?) -> String? {
                guard let column, column < fields.count else { return nil }
                let value = fields[column].trimmingCharacters(in: .whitespaces)
                return value.isEmpty ? nil : value
            }
            rows.append((fields[pathColumn], field(labelColumn), field(splitColumn)))
        }
    }

    /// RFC 4180 records with 1-based starting line numbers (quoted fields may span lines).
    static func csvRecords(_ text: String) -> [(line: Int, fields: [String])] {
        var records: [(Int, [String])] = []
        var fields: [String] = []
        var field = ""
        var quoted = false
        var line = 1, recordLine = 1
        var iterator = Array(text.unicodeScalars).makeIterator()
        var pending: Unicode.Scalar? = nil
        func next() -> Unicode.Scalar? {
            if let p = pending { pending = nil; return p }
            return iterator.next()
        }
        while let ch = next() {
            if quoted {
                if ch == "\"" {
                    if let following = next() {
                        if following == "\"" { field.unicodeScalars.append("\"") } else { quoted = false; pending = following }
                    } else { quoted = false }
                } else {
                    if ch == "\n" { line += 1 }
                    field.unicodeScalars.append(ch)
                }
                continue
            }
            switch ch {
            case "\"": quoted = true
            case ",": fields.append(field); field = ""
            case "\r": break
            case "\n":
                fields.append(field)
                records.append((recordLine, fields))
                fields = []; field = ""
                line += 1; recordLine = line
            default: field.unicodeScalars.append(ch)
            }
        }
        if !field.isEmpty || !fields.isEmpty {
            fields.append(field)
            records.append((recordLine, fields))
        }
        return records
    }

    private static func parseJSONL(_ text: String, manifestName: String,
                                   into rows: inout [(path: String, label: String?, split: String?)],
                                   deadLetters: inout [DeadLetter]) {
        for (offset, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.trimmingCharacters(in: .whitespacesAndNewlines)
            if line.isEmpty { continue }
            let key = "\(manifestName):\(offset + 1)"
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
                deadLetters.append(DeadLetter(key: key, reason: "line is not a JSON object"))
                continue
            }
            guard let path = object["path"] as? String, !path.isEmpty else {
                deadLetters.append(DeadLetter(key: key, reason: "object has no string 'path'"))
                continue
            }
            rows.append((path, labelText(object["label"]), object["split"] as? String))
        }
    }

    private static func labelText(_ value: Any?) -> String? {
        switch value {
        case let text as String: return text
        case let number as NSNumber:
            // JSONSerialization hands integers and booleans back as NSNumber; only whole numbers are labels.
            let double = number.doubleValue
            return double == double.rounded() ? String(Int(double)) : number.stringValue
        default: return nil
        }
    }
}
