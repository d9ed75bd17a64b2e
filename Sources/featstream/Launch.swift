import ArgumentParser
import ClusterLaunch
import Foundation

struct Launch: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Start a job's coordinator, head and workers on other hosts over SSH, as a cluster file describes.",
        discussion: """
        Checks that every host answers `ssh HOST true` before starting anything, streams every role's
        output with a [host role] prefix, stops everything on Ctrl-C or when the coordinator is done,
        and prints what ran where. See Cluster/example.toml for the file format.
        """)

    @Argument(help: "Cluster definition file (TOML subset).") var clusterFile: String
    @Flag(help: "Parse the file and print each role's command line; start nothing.") var dryRun = false

    func run() throws {
        let definition: ClusterDefinition
        do {
            definition = try ClusterFile.parse(path: clusterFile)
        } catch {
            printError("featstream launch: \(error)")
            throw ExitCode(2)
        }
        let launcher = Launcher(definition: definition)
        // Every socket is CurveZMQ: without the key folder nothing starts, and the message says how to make it.
        let coordinatorKey = URL(fileURLWithPath: definition.keysDirectory).appendingPathComponent("coordinator.pub").path
        if !dryRun && !FileManager.default.fileExists(atPath: coordinatorKey) {
            printError("featstream launch: no CURVE key folder at \(definition.keysDirectory) (the file's [keys] dir, or FILE.keys); "
                       + "make it with:\n  featstream keygen --cluster \(clusterFile)\nthen copy it to the same path on every host")
            throw ExitCode(2)
        }
        if dryRun {
            for role in launcher.roles { print("\(role.host) \(role.label): \(role.command.joined(separator: " "))") }
            return
        }
        let status = launcher.run()
        if status != 0 { throw ExitCode(status) }
    }
}
