import Configuration
import Foundation
import SystemPackage

/// One setting a service reads: its key (`acceptor.http.addr`, read from the environment as
/// `ACCEPTOR_HTTP_ADDR` or from the config file as `{"acceptor": {"http": {"addr": ...}}}`),
/// its default, and one line of help.
public struct SettingSpec: Sendable {
    public let key: String
    public let defaultValue: String
    public let help: String

    public init(_ key: String, default defaultValue: String, _ help: String) {
        self.key = key
        self.defaultValue = defaultValue
        self.help = help
    }

    /// The environment variable's name.
    public var environmentName: String { key.uppercased().replacingOccurrences(of: ".", with: "_") }
}

/// A setting with a value that cannot be used: names the variable, the value and the fix.
public struct SettingError: Error, CustomStringConvertible {
    public let description: String
    public init(_ spec: SettingSpec, _ value: String, _ expected: String) {
        description = "\(spec.environmentName)='\(value)' is not valid: expected \(expected) (default \(spec.defaultValue.isEmpty ? "unset" : spec.defaultValue))"
    }
}

/// Settings from environment variables, then from an optional JSON config file, then the
/// defaults: everything is read as text through swift-configuration and parsed here, so a bad
/// value fails start-up with a message naming the variable instead of being ignored.
public struct Settings: Sendable {
    let reader: ConfigReader

    /// Reads the environment and, when `<prefix>.config.file` is set, that JSON file.
    public static func load(configFileSpec: SettingSpec, environment: [String: String] = ProcessInfo.processInfo.environment) async throws -> Settings {
        let env = EnvironmentVariablesProvider(environmentVariables: environment)
        var providers: [any ConfigProvider] = [env]
        if let path = environment[configFileSpec.environmentName], !path.isEmpty {
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw SettingError(configFileSpec, path, "a readable JSON file (check the path and its permissions)")
            }
            do {
                providers.append(try await FileProvider<JSONSnapshot>(filePath: FilePath(path)))
            } catch {
                throw SettingError(configFileSpec, path, "a JSON object of settings (\(error))")
            }
        }
        return Settings(reader: ConfigReader(providers: providers))
    }

    public func string(_ spec: SettingSpec) -> String {
        reader.string(forKey: ConfigKey(spec.key)) ?? spec.defaultValue
    }

    public func optionalString(_ spec: SettingSpec) -> String? {
        let value = string(spec)
        return value.isEmpty ? nil : value
    }

    public func int(_ spec: SettingSpec, in range: ClosedRange<Int> = 0...Int.max) throws -> Int {
        let text = string(spec)
        guard let value = Int(text.trimmingCharacters(in: .whitespaces)), range.contains(value) else {
            throw SettingError(spec, text, "an integer from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    public func double(_ spec: SettingSpec, in range: ClosedRange<Double>) throws -> Double {
        let text = string(spec)
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)), range.contains(value) else {
            throw SettingError(spec, text, "a number from \(range.lowerBound) to \(range.upperBound)")
        }
        return value
    }

    public func bool(_ spec: SettingSpec) throws -> Bool {
        let text = string(spec)
        switch text.lowercased() {
        case "1", "true", "yes", "on": return true
        case "0", "false", "no", "off", "": return false
        default: throw SettingError(spec, text, "true or false")
        }
    }

    /// A size such as `1073741824`, `64MiB`, `1GiB`, `512KiB` (also `KB`, `MB`, `GB`, powers of 1024).
    public func bytes(_ spec: SettingSpec, in range: ClosedRange<Int> = 0...Int.max) throws -> Int {
        let text = string(spec)
        guard let value = Self.parseBytes(text), range.contains(value) else {
            throw SettingError(spec, text, "a byte size like 64MiB or 1GiB, from \(range.lowerBound) to \(range.upperBound) bytes")
        }
        return value
    }

    static func parseBytes(_ text: String) -> Int? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int)] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("GB", 1 << 30), ("MB", 1 << 20),
                                      ("KB", 1 << 10), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10), ("B", 1)]
        for (suffix, scale) in units where t.hasSuffix(suffix) {
            guard let n = Int(t.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)) else { return nil }
            let (v, overflow) = n.multipliedReportingOverflow(by: scale)
            return overflow ? nil : v
        }
        return Int(t)
    }

    /// `host:port`; the port must be 0 to 65535 (0 picks a free one).
    public func address(_ spec: SettingSpec) throws -> ListenAddress {
        let text = string(spec)
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (0...65535).contains(port), colon != text.startIndex else {
            throw SettingError(spec, text, "host:port, for example 127.0.0.1:4318")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return ListenAddress(host: host, port: port)
    }

    /// Seconds, as a number (`0.5`, `30`).
    public func seconds(_ spec: SettingSpec, in range: ClosedRange<Double>) throws -> Duration {
        let value = try double(spec, in: range)
        return .milliseconds(Int64((value * 1000).rounded()))
    }

    /// The `--help` text: every setting with its variable, default and meaning.
    public static func helpText(service: String, summary: String, specs: [SettingSpec]) -> String {
        var lines = ["\(service): \(summary)", "", "USAGE: \(service) [--help]", "",
                     "Every setting is an environment variable, or a key in the JSON file named by the",
                     "config-file variable (environment variables win). Defaults in brackets.", ""]
        let width = specs.map(\.environmentName.count).max() ?? 0
        for spec in specs {
            let name = spec.environmentName.padding(toLength: width, withPad: " ", startingAt: 0)
            lines.append("  \(name)  \(spec.help) [\(spec.defaultValue.isEmpty ? "unset" : spec.defaultValue)]")
        }
        return lines.joined(separator: "\n")
    }
}

/// Where a listener binds.
public struct ListenAddress: Sendable, Equatable, CustomStringConvertible {
    public var host: String
    public var port: Int
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
    public var description: String { "\(host):\(port)" }
}
