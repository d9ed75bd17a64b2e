import ArgumentParser
import Backbone
import Foundation

@main
struct FeatStream: ParsableCommand {
    static func main() {
        // Before any thread exists: oneDNN's OpenMP threads wait passively (see OpenMPWaiting).
        OpenMPWaiting.shortSpinUnlessConfigured()
        main(nil)
    }

    static let configuration = CommandConfiguration(
        commandName: "featstream",
        abstract: "Features from a frozen ONNX CNN over an image corpus, for a head to train on.",
        discussion: """
        One binary plays every role of a FeatureStream job:

          run          (default) a whole cluster on this host: coordinator,
                       head and N workers as child processes.
          launch       the same across hosts over SSH, from a cluster file.
          coordinator  cuts the dataset into shards and leases them to
                       workers; journals the head's commits.
          worker       decodes images, runs the frozen backbone and streams
                       LZ4-compressed feature batches to the head.
          head         verifies, deduplicates and stores the features,
                       committing each shard atomically.
          extract      one host, no cluster: features straight to .npy.
          train        retrain a head from a store; predict: classify images;
                       export-features: a store as NumPy files.
          store        inspect a head's feature store.
          status       a live table of a running job (from its metrics).
          keygen       a CurveZMQ key pair for securing every socket.
          bench        measure the backbone, decoder and codecs.
          model init   an editable model.json for a bare .onnx.
          calibrate    activation ranges for --precision int8.
        """,
        subcommands: [Run.self, Launch.self, Extract.self, Coordinator.self, Worker.self, Head.self, Train.self, Predict.self, ExportFeatures.self, Store.self, Status.self, Keygen.self, Bench.self, Model.self, Calibrate.self],
        defaultSubcommand: Run.self
    )
}

/// Writes a message to standard error; used for errors that end a command.
func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}
