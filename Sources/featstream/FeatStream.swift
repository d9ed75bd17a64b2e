import ArgumentParser
import Foundation

@main
struct FeatStream: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "featstream",
        abstract: "Features from a frozen ONNX CNN over an image corpus, for a head to train on.",
        discussion: """
        One binary plays every role of a FeatureStream job.

        Available now:
          extract   One host, no cluster: decode images, run the backbone,
                    write features.npy, metadata.csv, classes.txt and
                    dead_letters.csv to a folder.
          bench     Measure the backbone and the decoder on this machine.

        The distributed roles are built on extract's pipeline:
          coordinator  cuts the dataset into shards and leases them out;
          worker       decodes images and runs the frozen backbone;
          head         stores the features and trains the classifier;
          run          starts all of them on one host.
        """,
        subcommands: [Extract.self, Bench.self]
    )
}

/// Writes a message to standard error; used for errors that end a command.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
