/// A binary min-heap: the lease table's pending shards (the lowest is found without scanning the plan)
/// and the simulator's event queue (earliest first, ties in scheduling order).
public struct MinHeap<Element: Comparable & Sendable>: Sendable {
    private var storage: [Element] = []

    /// An empty heap.
    public init() {}

    /// Whether the heap holds nothing.
    public var isEmpty: Bool { storage.isEmpty }

    /// Adds `value`.
    public mutating func push(_ value: Element) {
        storage.append(value)
        var child = storage.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard storage[child] < storage[parent] else { break }
            storage.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the smallest element.
    public mutating func pop() -> Element? {
        guard let top = storage.first else { return nil }
        let last = storage.removeLast()
        if !storage.isEmpty {
            storage[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1, right = left + 1
                var smallest = parent
                if left < storage.count, storage[left] < storage[smallest] { smallest = left }
                if right < storage.count, storage[right] < storage[smallest] { smallest = right }
                if smallest == parent { break }
                storage.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return top
    }
}
