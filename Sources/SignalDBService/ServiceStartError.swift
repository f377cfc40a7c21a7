/// A start-up failure with a message that names the path, the cause and the fix.
public struct ServiceStartError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
