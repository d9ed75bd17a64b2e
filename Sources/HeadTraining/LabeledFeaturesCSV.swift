import Foundation

/// Builds a labelled set from `featstream extract` output already in memory: the `features.npy`
/// values with their shape `[rows, dimension]`, and the text of `metadata.csv`
/// (`row,index,key,label,label_name,split`, RFC 4180 quoting). Each feature row gets the label of the
/// metadata line whose `row` column names it. Throws `malformedFeatures` when the shape, the
/// header or a row is wrong, or when a feature row has no metadata line.
public func labeledFeatures(features: [Float], shape: [Int], metadataCSV: String) throws -> LabeledFeatures {
    guard shape.count == 2, shape[0] * shape[1] == features.count else {
        throw TrainingError.malformedFeatures("expected a [rows, dimension] array, got shape \(shape)")
    }
    let records = parseCSV(metadataCSV)
    guard let header = records.first, let rowColumn = header.firstIndex(of: "row"),
          let labelColumn = header.firstIndex(of: "label") else {
        throw TrainingError.malformedFeatures("metadata.csv lacks a header with row and label columns")
    }
    var labels = [Int32?](repeating: nil, count: shape[0])
    for (line, record) in records.dropFirst().enumerated() where !(record.count == 1 && record[0].isEmpty) {
        guard record.count > max(rowColumn, labelColumn), let row = Int(record[rowColumn]), let label = Int32(record[labelColumn]),
              row >= 0, row < shape[0] else {
            throw TrainingError.malformedFeatures("metadata.csv line \(line + 2) is not a valid row,label for \(shape[0]) rows")
        }
        labels[row] = label
    }
    if let missing = labels.firstIndex(where: { $0 == nil }) {
        throw TrainingError.malformedFeatures("feature row \(missing) has no line in metadata.csv")
    }
    return LabeledFeatures(features: features, labels: labels.map { $0! }, dimension: shape[1])
}

/// Records of RFC 4180 CSV text: quoted fields may hold commas, doubled quotes and line breaks.
func parseCSV(_ text: String) -> [[String]] {
    var records: [[String]] = []
    var record: [String] = []
    var field = ""
    var quoted = false
    var characters = text.makeIterator()
    var pending: Character? = nil
    while let character = pending ?? characters.next() {
        pending = nil
        if quoted {
            if character == "\"" {
                if let next = characters.next() {
                    if next == "\"" { field.append("\"") } else { quoted = false; pending = next }
                } else { quoted = false }
            } else {
                field.append(character)
            }
            continue
        }
        switch character {
        case "\"": quoted = true
        case ",": record.append(field); field = ""
        case "\n", "\r\n", "\r":
            record.append(field); field = ""
            records.append(record); record = []
        default: field.append(character)
        }
    }
    if !field.isEmpty || !record.isEmpty { record.append(field); records.append(record) }
    return records
}
