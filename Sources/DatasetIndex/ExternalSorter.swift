import DurableFile
import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sorts byte strings in code-point (byte) order in bounded memory: entries are held until they take
/// `runBytes`, then sorted and spilled to a temporary run file; `finish` merges the runs (at most `fanIn`
/// at a time, in passes), so memory is O(runBytes + fanIn × 64 KiB) whatever the number of entries.
final class ExternalSorter {
    private let runBytes: Int
    private let temporaryDirectory: String
    private let fanIn: Int
    private var pending: [[UInt8]] = []
    private var pendingBytes = 0
    private var runs: [String] = []
    private var runSerial = 0
    /// Runs written to disk so far (tests check the external path ran).
    private(set) var spilledRuns = 0

    /// Bytes one held entry costs beyond its own bytes (array header and allocation), for the budget.
    static let entryOverhead = 48

    init(runBytes: Int, temporaryDirectory: String, fanIn: Int = 64) {
        self.runBytes = max(runBytes, 1)
        self.temporaryDirectory = temporaryDirectory
        self.fanIn = max(fanIn, 2)
    }

    deinit { for run in runs { unlink(run) } }

    func add(_ entry: [UInt8]) throws {
        pending.append(entry)
        pendingBytes += entry.count + Self.entryOverhead
        if pendingBytes >= runBytes { try spill() }
    }

    private func newRunPath() -> String {
        runSerial += 1
        return temporaryDirectory + "/sort-\(getpid())-\(UInt(bitPattern: ObjectIdentifier(self).hashValue))-\(runSerial).run"
    }

    private func spill() throws {
        guard !pending.isEmpty else { return }
        pending.sort { $0.lexicographicallyPrecedes($1) }
        let path = newRunPath()
        let out = try PartFile(path: path, bufferLimit: 1 << 16)
        for entry in pending {
            var length = UInt32(entry.count).littleEndian
            try withUnsafeBytes(of: &length) { try out.append($0) }
            try out.append(entry)
        }
        try out.flush()
        runs.append(path)
        spilledRuns += 1
        pending.removeAll()
        pendingBytes = 0
    }

    /// The entries in sorted order; the sorter must not be used after this.
    func finish() throws -> SortedEntries {
        if runs.isEmpty {
            pending.sort { $0.lexicographicallyPrecedes($1) }
            let entries = pending
            pending = []
            return SortedEntries(memory: entries)
        }
        try spill()
        while runs.count > fanIn {
            var next: [String] = []
            for start in stride(from: 0, to: runs.count, by: fanIn) {
                let group = Array(runs[start..<min(start + fanIn, runs.count)])
                let merged = try MergeIterator(runs: group)
                let path = newRunPath()
                let out = try PartFile(path: path, bufferLimit: 1 << 16)
                while let entry = try merged.next() {
                    var length = UInt32(entry.count).littleEndian
                    try withUnsafeBytes(of: &length) { try out.append($0) }
                    try out.append(entry)
                }
                try out.flush()
                for run in group { unlink(run) }
                next.append(path)
            }
            runs = next
        }
        let merge = try MergeIterator(runs: runs)
        runs.forEach { unlink($0) }   // the open descriptors keep them readable
        runs = []
        return SortedEntries(merge: merge)
    }
}

/// The output of `ExternalSorter.finish`, one entry at a time.
final class SortedEntries {
    private var memory: [[UInt8]]
    private var index = 0
    private let merge: MergeIterator?

    init(memory: [[UInt8]]) { self.memory = memory; merge = nil }
    init(merge: MergeIterator) { memory = []; self.merge = merge }

    func next() throws -> [UInt8]? {
        if let merge { return try merge.next() }
        guard index < memory.count else { memory = []; return nil }
        defer { index += 1 }
        return memory[index]
    }
}

/// A k-way merge of sorted run files (binary heap on each run's current entry).
final class MergeIterator {
    private var readers: [RunReader]
    private var heap: [(entry: [UInt8], run: Int)] = []

    init(runs: [String]) throws {
        readers = try runs.map { try RunReader(path: $0) }
        for (i, reader) in readers.enumerated() {
            if let entry = try reader.next() { push((entry, i)) }
        }
    }

    func next() throws -> [UInt8]? {
        guard !heap.isEmpty else { return nil }
        let top = heap[0]
        if let entry = try readers[top.run].next() {
            heap[0] = (entry, top.run)
            siftDown(0)
        } else {
            let last = heap.removeLast()
            if !heap.isEmpty { heap[0] = last; siftDown(0) }
        }
        return top.entry
    }

    private func less(_ a: Int, _ b: Int) -> Bool {
        // Ties go to the earlier run, so equal entries keep their spill order (a stable merge).
        if heap[a].entry == heap[b].entry { return heap[a].run < heap[b].run }
        return heap[a].entry.lexicographicallyPrecedes(heap[b].entry)
    }

    private func push(_ item: (entry: [UInt8], run: Int)) {
        heap.append(item)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard less(i, parent) else { break }
            heap.swapAt(i, parent)
            i = parent
        }
    }

    private func siftDown(_ start: Int) {
        var i = start
        while true {
            let l = 2 * i + 1, r = l + 1
            var best = i
            if l < heap.count && less(l, best) { best = l }
            if r < heap.count && less(r, best) { best = r }
            if best == i { return }
            heap.swapAt(i, best)
            i = best
        }
    }
}

/// Reads a run file's length-prefixed entries through a 64 KiB buffer.
final class RunReader {
    private let file: DurableFile
    private var buffer = [UInt8](repeating: 0, count: 1 << 16)
    private var start = 0, end = 0
    private var fileOffset = 0

    init(path: String) throws {
        do {
            file = try DurableFile.open(path, access: .readOnly)
        } catch {
            throw IndexError("cannot open sort run \(path): \(failureText(error))")
        }
    }

    /// Whether `need` bytes are buffered after reading what the file has (false: it ends sooner).
    private func fill(_ need: Int) throws -> Bool {
        if end - start >= need { return true }
        if start > 0 {
            buffer.withUnsafeMutableBytes { b in
                if end > start { memmove(b.baseAddress!, b.baseAddress! + start, end - start) }
            }
            end -= start; start = 0
        }
        if need > buffer.count { buffer += [UInt8](repeating: 0, count: need - buffer.count) }
        let got: Int
        do {
            got = try buffer.withUnsafeMutableBytes { try file.readAvailable(into: UnsafeMutableRawBufferPointer(rebasing: $0[end...]), at: fileOffset) }
        } catch {
            throw IndexError("cannot read sort run \(file.path): \(failureText(error))")
        }
        end += got
        fileOffset += got
        return end - start >= need
    }

    func next() throws -> [UInt8]? {
        guard try fill(4) else {
            if end > start { throw IndexError("sort run \(file.path) ends mid-entry") }
            return nil
        }
        let length = buffer.withUnsafeBytes { Int(UnsafeRawBufferPointer(rebasing: $0[start..<start + 4]).u32(0)) }
        guard try fill(4 + length) else { throw IndexError("sort run \(file.path) ends mid-entry") }
        let entry = Array(buffer[(start + 4)..<(start + 4 + length)])
        start += 4 + length
        return entry
    }
}
