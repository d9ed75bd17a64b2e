import DatasetIndex
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// `featstream-index`: builds, shows and checks dataset indexes (Protocols/INDEX.md) outside a job, for the
/// benchmarks (Benchmarks/index_bench.py) and for operators. Output is one JSON object per line.
///
///     featstream-index build DATASET --out INDEX [--kind K] [--split S] [--limit N] [--no-check-paths]
///                                    [--sort-run-bytes B] [--first N]
///     featstream-index show INDEX [--from I --count N] [--dead-letters]
///     featstream-index check INDEX DATASET [--kind K] [--split S] [--limit N] [--no-check-paths]

func usage() -> Never {
    FileHandle.standardError.write(Data("""
    usage: featstream-index build DATASET --out INDEX [--kind imagefolder|manifest|webdataset] [--split S] [--limit N]
                                          [--no-check-paths] [--sort-run-bytes B] [--first N]
           featstream-index show INDEX [--from I] [--count N] [--dead-letters]
           featstream-index check INDEX DATASET [--kind K] [--split S] [--limit N] [--no-check-paths]

    """.utf8))
    exit(2)
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("featstream-index: \(message)\n".utf8))
    exit(1)
}

func json(_ object: [String: Any]) -> String {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

var arguments = Array(CommandLine.arguments.dropFirst())
guard let command = arguments.first else { usage() }
arguments.removeFirst()
var positional: [String] = []
var flags: [String: String] = [:]
var switches: Set<String> = []
while !arguments.isEmpty {
    let argument = arguments.removeFirst()
    if ["--no-check-paths", "--dead-letters"].contains(argument) { switches.insert(argument); continue }
    if argument.hasPrefix("--") {
        guard !arguments.isEmpty else { usage() }
        flags[argument] = arguments.removeFirst()
    } else {
        positional.append(argument)
    }
}

@MainActor func selection(_ path: String) -> IndexSelection {
    var kind: DatasetKind?
    if let name = flags["--kind"] {
        guard let parsed = DatasetKind(name: name) else { fail("unknown kind '\(name)'") }
        kind = parsed
    }
    return IndexSelection(path: path, kind: kind, split: flags["--split"], limit: flags["--limit"].flatMap { Int($0) },
                          checkPaths: !switches.contains("--no-check-paths"))
}

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

func peakRSSKiB() -> Int {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Int(usage.ru_maxrss)
}

switch command {
case "build":
    guard positional.count == 1, let out = flags["--out"] else { usage() }
    var options = ScanOptions()
    if let bytes = flags["--sort-run-bytes"].flatMap({ Int($0) }) { options.sortRunBytes = bytes }
    let first = flags["--first"].flatMap { Int($0) } ?? 1024
    let start = Date()
    let scan: IndexScan
    do { scan = try IndexScan.start(selection(positional[0]), indexPath: out, options: options) } catch { fail("\(error)") }
    let early = scan.wait(forItems: first)
    let firstSeconds = Date().timeIntervalSince(start)
    _ = scan.wait(forItems: Int.max)
    let scanSeconds = Date().timeIntervalSince(start)
    let index: IndexedDataset
    do { index = try scan.finished() } catch { fail("\(error)") }
    let seconds = Date().timeIntervalSince(start)
    let bytes = (try? FileManager.default.attributesOfItem(atPath: out)[.size] as? Int) ?? 0
    print(json([
        "items": index.count, "deadLetters": index.deadLetterCount, "skipped": index.skippedCount,
        "classes": index.classCount, "seconds": seconds, "itemsPerSecond": Double(index.count) / max(seconds, 1e-9),
        "scanSeconds": scanSeconds, "scanItemsPerSecond": Double(index.count) / max(scanSeconds, 1e-9),
        "firstItems": min(first, early.finalItems), "firstItemsSeconds": firstSeconds, "indexBytes": bytes,
        "peakRSSKiB": peakRSSKiB(), "cpuSeconds": cpuSeconds(), "contentID": String(index.contentID, radix: 16),
        "datasetFingerprint": String(index.datasetFingerprint, radix: 16),
    ]))
case "show":
    guard positional.count == 1 else { usage() }
    do {
        let index = try IndexedDataset(path: positional[0])
        print(json(["items": index.count, "deadLetters": index.deadLetterCount, "skipped": index.skippedCount,
                    "kind": index.kind.name, "root": index.root, "classes": try index.classNames(),
                    "selection": index.selection]))
        let from = flags["--from"].flatMap { Int($0) } ?? 0
        let count = flags["--count"].flatMap { Int($0) } ?? 0
        for item in try index.items(from..<min(index.count, from + count)) {
            var object: [String: Any] = ["position": item.position, "key": item.key, "label": item.label]
            switch item.locator {
            case .file(let path): object["path"] = path
            case let .tarMember(path, offset, size): object["tar"] = path; object["offset"] = offset; object["size"] = size
            case .rejected(let reason): object["rejected"] = reason  // never in an index; the wire's third case
            }
            print(json(object))
        }
        if switches.contains("--dead-letters") {
            for letter in try index.deadLetters() {
                print(json(["deadLetter": letter.key, "reason": letter.reason, "position": letter.position]))
            }
        }
    } catch { fail("\(error)") }
case "check":
    guard positional.count == 2 else { usage() }
    switch IndexReuse.check(indexPath: positional[0], selection: selection(positional[1])) {
    case .reusable(let index): print(json(["reusable": true, "items": index.count]))
    case .datasetChanged(_, let changes):
        print(json(["reusable": false, "changes": changes.map(\.description)]))
        exit(3)
    case .absent(let reason):
        print(json(["reusable": false, "reason": reason]))
        exit(4)
    }
default:
    usage()
}
