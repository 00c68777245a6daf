import UnionCore

/// fuse-overlayfs's `uidmapping=`/`gidmapping=`: `STORED:SHOWN:COUNT` triples, colon-separated.
/// The id stored in the layers comes first, the id shown through the mount second: with
/// `0:100000:65536` a file stored as 0 shows as 100000, and a chown to 100005 stores 5.
/// Empty items are skipped, as fuse-overlayfs's strtok skips them: containers/storage writes
/// `uidmapping=:0:100000:65536`. Everything else is refused: fields that are not decimal ids,
/// a field count that is not a multiple of 3, a zero count, a range passing 4294967294 on
/// either side, ranges sharing an id on either side, more than 340 triples (the kernel's limit).
enum IDMapping {
    static func parse(_ key: String, _ value: ArraySlice<UInt8>) throws(UsageError) -> IDMap {
        let fields = value.split(separator: OptionList.colon).map { Array($0) }
        func refuse(_ why: String) -> UsageError {
            UsageError(message: "option \(key)=\(Printable.text(value)): \(why) (\(key)=STORED:SHOWN:COUNT[:STORED:SHOWN:COUNT...], fuse-overlayfs syntax)")
        }
        guard !fields.isEmpty else { throw refuse("no STORED:SHOWN:COUNT triple") }
        var numbers: [UInt32] = []
        numbers.reserveCapacity(fields.count)
        for f in fields {
            guard let n = Numbers.id(f, max: UInt32.max) else {
                throw refuse("'\(Printable.text(f, limit: 40))' is not a decimal id from 0 to 4294967294")
            }
            numbers.append(n)
        }
        guard numbers.count % 3 == 0 else {
            throw refuse("\(numbers.count) numbers do not make STORED:SHOWN:COUNT triples")
        }
        guard numbers.count / 3 <= IDMap.maxRanges else {
            throw refuse("\(numbers.count / 3) triples, more than the \(IDMap.maxRanges) the kernel allows in an id map")
        }
        let triples = stride(from: 0, to: numbers.count, by: 3).map { (numbers[$0], numbers[$0 + 1], numbers[$0 + 2]) }
        let ranges = triples.map { IDMap.Range(container: $0.1, host: $0.0, count: $0.2) }
        func triple(_ i: Int) -> String { "\(triples[i].0):\(triples[i].1):\(triples[i].2)" }
        do {
            return try IDMap(ranges: ranges)
        } catch {
            switch error {
            case .tooManyRanges(let n):
                throw refuse("\(n) triples, more than the \(IDMap.maxRanges) the kernel allows")
            case .zeroCount(let i):
                throw refuse("\(triple(i)) has a count of 0")
            case .hostOverflow(let i):
                throw refuse("\(triple(i)) maps stored ids past 4294967294")
            case .containerOverflow(let i):
                throw refuse("\(triple(i)) maps shown ids past 4294967294")
            case .hostOverlap(let a, let b):
                throw refuse("\(triple(a)) and \(triple(b)) share stored ids")
            case .containerOverlap(let a, let b):
                throw refuse("\(triple(a)) and \(triple(b)) share shown ids")
            }
        }
    }
}
