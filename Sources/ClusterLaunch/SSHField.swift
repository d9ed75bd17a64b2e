import Foundation

/// Checks for every value that reaches ssh's own command line (not the quoted remote command): a
/// value ssh could read as an option (leading `-`), or that carries whitespace, control characters or
/// shell metacharacters, is refused with the reason; nothing is run.
public enum SSHField {
    static let metacharacters = Set("`$;&|<>(){}[]*?!~#'\"\\")

    /// A host name, `user@host`, IPv4/IPv6 address or ssh alias.
    public static func hostProblem(_ host: String) -> String? {
        if let problem = common(host) { return problem }
        guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-@:%".contains($0)) }) else {
            return "'\(host)' is not a host name (letters, digits, '.', '-', '_', '@', ':' only)"
        }
        return nil
    }

    /// A remote login name.
    public static func userProblem(_ user: String) -> String? {
        if let problem = common(user) { return problem }
        guard user.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "._-".contains($0)) }) else {
            return "'\(user)' is not a user name (letters, digits, '.', '-', '_' only)"
        }
        return nil
    }

    /// A `-o Name=value` option; options that run local commands are refused outright.
    public static func optionProblem(_ option: String) -> String? {
        if let problem = common(option) { return problem }
        let name = option.split(separator: "=", maxSplits: 1).first.map { $0.lowercased() } ?? ""
        if ["proxycommand", "localcommand", "permitlocalcommand", "knownhostscommand", "remotecommand", "match"].contains(name) {
            return "'\(option)': ssh options that run commands are not accepted in a cluster file (use [ssh] config for a ProxyJump)"
        }
        guard option.contains("=") else { return "'\(option)' is not Name=value" }
        return nil
    }

    /// A local path (the ssh binary, its config file).
    public static func pathProblem(_ path: String) -> String? { common(path) }

    private static func common(_ value: String) -> String? {
        if value.hasPrefix("-") { return "'\(value)' starts with '-', which ssh would read as an option" }
        if value.contains(where: { $0.isWhitespace || ($0.asciiValue.map { $0 < 32 || $0 == 127 } ?? false) }) {
            return "'\(value)' contains whitespace or control characters"
        }
        if value.contains(where: { metacharacters.contains($0) }) { return "'\(value)' contains shell metacharacters" }
        return nil
    }
}
