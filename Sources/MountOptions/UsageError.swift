/// A mistake on the command line: one line for the user, exit status 2, nothing mounted.
public struct UsageError: Error, Equatable, Sendable, CustomStringConvertible {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
