/// A strict parser for one JSONL line (RFC 8259), keeping only the top-level `path`, `label` and `split`
/// members: a hand-written byte scanner because the manifest reader must keep up with a million lines a
/// second, which a general JSON decoder building a dictionary per line does not.
struct JSONLine {
    struct Failure: Error { let reason: String }

    /// The members the index uses; `refusal` says why a present member has the wrong type.
    struct Fields {
        var path: [UInt8]?
        var label: [UInt8]?
        var labelIsNumber = false
        var split: [UInt8]?
        var refusal: String?
    }

    private let bytes: UnsafeRawBufferPointer
    private var i = 0
    private var depth = 0

    init(bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    private func fail(_ what: String) -> Failure { Failure(reason: "\(what) at byte \(i + 1)") }

    private mutating func skipSpace() {
        while i < bytes.count, bytes[i] == 0x20 || bytes[i] == 0x09 || bytes[i] == 0x0A || bytes[i] == 0x0D { i += 1 }
    }

    private mutating func expect(_ byte: UInt8, _ what: String) throws {
        skipSpace()
        guard i < bytes.count, bytes[i] == byte else { throw fail("expected \(what)") }
        i += 1
    }

    /// Parses the whole line as one object; trailing bytes other than white space are an error.
    mutating func object() throws -> Fields {
        var fields = Fields()
        skipSpace()
        guard i < bytes.count, bytes[i] == 0x7B else { throw fail("expected '{'") }
        i += 1
        skipSpace()
        if i < bytes.count, bytes[i] == 0x7D {
            i += 1
        } else {
            while true {
                skipSpace()
                guard i < bytes.count, bytes[i] == 0x22 else { throw fail("expected a member name") }
                let name = try string()
                try expect(0x3A, "':'")
                skipSpace()
                switch name {
                case Array("path".utf8):
                    if i < bytes.count, bytes[i] == 0x22 { fields.path = try string() } else {
                        try skipValue(); fields.refusal = fields.refusal ?? "member 'path' is not a string"
                    }
                case Array("label".utf8):
                    if i < bytes.count, bytes[i] == 0x22 { fields.label = try string() }
                    else if i < bytes.count, bytes[i] == 0x6E { try skipValue() }   // null: unlabelled
                    else if i < bytes.count, bytes[i] == 0x2D || (bytes[i] >= 0x30 && bytes[i] <= 0x39) {
                        let start = i
                        try number()
                        let text = Array(bytes[start..<i])
                        if text.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) { fields.label = text; fields.labelIsNumber = true }
                        else { fields.refusal = fields.refusal ?? "label \(String(decoding: text, as: UTF8.self)) is not a non-negative integer" }
                    } else { try skipValue(); fields.refusal = fields.refusal ?? "member 'label' is not a string or an integer" }
                case Array("split".utf8):
                    if i < bytes.count, bytes[i] == 0x22 { fields.split = try string() } else { try skipValue() }
                default:
                    try skipValue()
                }
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated object") }
                if bytes[i] == 0x2C { i += 1; continue }
                if bytes[i] == 0x7D { i += 1; break }
                throw fail("expected ',' or '}'")
            }
        }
        skipSpace()
        guard i == bytes.count else { throw fail("unexpected bytes after the object") }
        return fields
    }

    /// A string at `i` (which is `"`), unescaped to UTF-8.
    private mutating func string() throws -> [UInt8] {
        i += 1
        var out: [UInt8] = []
        while true {
            guard i < bytes.count else { throw fail("unterminated string") }
            let b = bytes[i]
            if b == 0x22 { i += 1; return out }
            if b < 0x20 { throw fail("control character in a string") }
            if b != 0x5C { out.append(b); i += 1; continue }
            i += 1
            guard i < bytes.count else { throw fail("unterminated escape") }
            let e = bytes[i]
            i += 1
            switch e {
            case 0x22, 0x5C, 0x2F: out.append(e)
            case 0x62: out.append(0x08)
            case 0x66: out.append(0x0C)
            case 0x6E: out.append(0x0A)
            case 0x72: out.append(0x0D)
            case 0x74: out.append(0x09)
            case 0x75:
                var scalar = try hex4()
                if scalar >= 0xD800 && scalar < 0xDC00 {
                    guard i + 1 < bytes.count, bytes[i] == 0x5C, bytes[i + 1] == 0x75 else { throw fail("lone surrogate") }
                    i += 2
                    let low = try hex4()
                    guard low >= 0xDC00 && low < 0xE000 else { throw fail("bad surrogate pair") }
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if scalar >= 0xDC00 && scalar < 0xE000 { throw fail("lone surrogate") }
                out.append(contentsOf: Array(String(Character(Unicode.Scalar(scalar)!)).utf8))
            default: throw fail("bad escape")
            }
        }
    }

    private mutating func hex4() throws -> UInt32 {
        guard i + 4 <= bytes.count else { throw fail("short \\u escape") }
        var v: UInt32 = 0
        for _ in 0..<4 {
            let b = bytes[i]
            let d: UInt32
            switch b {
            case 0x30...0x39: d = UInt32(b - 0x30)
            case 0x41...0x46: d = UInt32(b - 0x41 + 10)
            case 0x61...0x66: d = UInt32(b - 0x61 + 10)
            default: throw fail("bad \\u escape")
            }
            v = v << 4 | d
            i += 1
        }
        return v
    }

    private mutating func number() throws {
        let start = i
        if i < bytes.count, bytes[i] == 0x2D { i += 1 }
        func digits() -> Int { let s = i; while i < bytes.count, bytes[i] >= 0x30 && bytes[i] <= 0x39 { i += 1 }; return i - s }
        guard digits() > 0 else { throw fail("bad number") }
        if i < bytes.count, bytes[i] == 0x2E { i += 1; guard digits() > 0 else { throw fail("bad number") } }
        if i < bytes.count, bytes[i] == 0x65 || bytes[i] == 0x45 {
            i += 1
            if i < bytes.count, bytes[i] == 0x2B || bytes[i] == 0x2D { i += 1 }
            guard digits() > 0 else { throw fail("bad number") }
        }
        if bytes[start] == 0x30 || (bytes[start] == 0x2D && start + 1 < i && bytes[start + 1] == 0x30) {
            let digitStart = bytes[start] == 0x2D ? start + 1 : start
            if digitStart + 1 < i, bytes[digitStart + 1] >= 0x30 && bytes[digitStart + 1] <= 0x39 { throw fail("leading zero") }
        }
    }

    private mutating func literal(_ word: String) throws {
        for b in word.utf8 {
            guard i < bytes.count, bytes[i] == b else { throw fail("bad literal") }
            i += 1
        }
    }

    private mutating func skipValue() throws {
        skipSpace()
        guard i < bytes.count else { throw fail("expected a value") }
        switch bytes[i] {
        case 0x22: _ = try string()
        case 0x74: try literal("true")
        case 0x66: try literal("false")
        case 0x6E: try literal("null")
        case 0x7B, 0x5B:
            depth += 1
            defer { depth -= 1 }
            guard depth < 64 else { throw fail("nesting deeper than 64") }
            let close: UInt8 = bytes[i] == 0x7B ? 0x7D : 0x5D
            let isObject = bytes[i] == 0x7B
            i += 1
            skipSpace()
            if i < bytes.count, bytes[i] == close { i += 1; return }
            while true {
                if isObject {
                    skipSpace()
                    guard i < bytes.count, bytes[i] == 0x22 else { throw fail("expected a member name") }
                    _ = try string()
                    try expect(0x3A, "':'")
                }
                try skipValue()
                skipSpace()
                guard i < bytes.count else { throw fail("unterminated value") }
                if bytes[i] == 0x2C { i += 1; continue }
                if bytes[i] == close { i += 1; return }
                throw fail("expected ',' or a closing bracket")
            }
        default: try number()
        }
    }
}
