import FuseBridge
enum Inspect {
    static func main(_ args: [String]) -> Int32 {
        fail("inspect is not built yet")
        return 2
    }
}
