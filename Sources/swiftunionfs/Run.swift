import FuseBridge
enum RunCommand {
    static func main(_ args: [String]) -> Int32 {
        fail("run is not built yet")
        return 2
    }
}
