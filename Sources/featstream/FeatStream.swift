import ArgumentParser
import Foundation

@main
struct FeatStream: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "featstream",
        abstract: "Extract features from an image corpus with a frozen ONNX CNN, and train a head on them.",
        discussion: """
        One binary plays every role of a FeatureStream job:

          extract      One host, no cluster: decode images, run the backbone, write features.npy,
                       metadata.csv, classes.txt and dead_letters.csv to a folder.
          bench        Measure the backbone and the decoder on this machine (see Benchmarks/).

        The distributed roles (coordinator: shards the dataset and leases shards; worker: decodes and
        runs the backbone; head: stores features and trains the classifier; run: all of them on one
        host) are built on `extract`'s pipeline and are described in Protocols/.
        """,
        subcommands: [Extract.self, Bench.self]
    )
}

/// Writes a message to standard error; used for errors that end a command.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
