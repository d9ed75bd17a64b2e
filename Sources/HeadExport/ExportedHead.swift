import Foundation
import HeadTraining

/// A trained classification head in the plain form every exporter consumes: standardisation
/// statistics followed by dense layers with ReLU between them and a softmax after the last.
///
/// The trainer's `HeadModel` converts to this for the exporters. `probabilities(for:)` is the reference
/// every exported artefact must reproduce; it runs the trainer's own forward pass (`HeadModel`), so
/// training, `predict` and the export checks share one implementation of the head's maths.
public struct ExportedHead: Sendable, Equatable {
    /// One name per output of the last layer, in output order.
    public var classNames: [String]
    /// Per-feature mean subtracted before the first layer; length is the feature dimension.
    public var mean: [Float]
    /// Per-feature standard deviation divided out after subtracting `mean`; same length, no zeros.
    public var std: [Float]
    /// The dense layers in application order: one for softmax regression, two for an MLP.
    public var layers: [DenseLayer]
    /// Which backbone produced the features (for example `efficientnet-lite0`); informational.
    public var backbone: String
    /// The backbone tensor the features were read from (for example `features`); informational.
    public var featureNode: String
    /// How the backbone's input pixels were normalised; informational, recorded so a reader can
    /// tell whether its own preprocessing matches the one the head was trained on.
    public var normalization: String

    /// Gathers the parts of a head; call `validate()` (exporters do) to check that they fit together.
    public init(
        classNames: [String], mean: [Float], std: [Float], layers: [DenseLayer],
        backbone: String, featureNode: String, normalization: String
    ) {
        self.classNames = classNames
        self.mean = mean
        self.std = std
        self.layers = layers
        self.backbone = backbone
        self.featureNode = featureNode
        self.normalization = normalization
    }

    /// The feature dimension the head consumes (the length of `mean`).
    public var featureDimension: Int { mean.count }

    /// Throws `HeadExportError.invalidHead` unless the statistics, layer shapes and class names
    /// chain together and every number is finite, so an export never writes an unusable model.
    public func validate() throws {
        func fail(_ reason: String) -> HeadExportError { .invalidHead(reason) }
        guard !mean.isEmpty else { throw fail("the feature dimension is zero") }
        guard std.count == mean.count else {
            throw fail("mean has \(mean.count) values but std has \(std.count)")
        }
        guard mean.allSatisfy(\.isFinite) else { throw fail("mean has a non-finite value") }
        if let bad = std.firstIndex(where: { !$0.isFinite || $0 == 0 }) {
            throw fail("std[\(bad)] is \(std[bad]); standardisation needs finite, non-zero values")
        }
        guard !layers.isEmpty else { throw fail("the head has no layers") }
        guard layers.count <= 2 else { throw fail("\(layers.count) layers; a head is one layer or an MLP of two") }
        var inputs = mean.count
        for (index, layer) in layers.enumerated() {
            guard layer.inputs == inputs else {
                throw fail("layer \(index) takes \(layer.inputs) inputs but receives \(inputs)")
            }
            guard layer.outputs > 0 else { throw fail("layer \(index) has no outputs") }
            guard layer.weights.count == layer.outputs * layer.inputs else {
                throw fail("layer \(index) has \(layer.weights.count) weights, expected \(layer.outputs)×\(layer.inputs)")
            }
            guard layer.bias.count == layer.outputs else {
                throw fail("layer \(index) has \(layer.bias.count) biases, expected \(layer.outputs)")
            }
            guard layer.weights.allSatisfy(\.isFinite), layer.bias.allSatisfy(\.isFinite) else {
                throw fail("layer \(index) has a non-finite parameter")
            }
            inputs = layer.outputs
        }
        guard inputs == classNames.count else {
            throw fail("the last layer has \(inputs) outputs but there are \(classNames.count) class names")
        }
    }

    /// The head as the trainer's model. Throws `invalidHead` when the parts do not fit together.
    public func model() throws -> HeadModel {
        try validate()
        return HeadModel(standardizer: Standardizer(mean: mean, std: std), layer1Weights: layers[0].weights, layer1Bias: layers[0].bias,
                         layer2Weights: layers.count > 1 ? layers[1].weights : nil, layer2Bias: layers.count > 1 ? layers[1].bias : nil)
    }

    /// Class scores before the softmax for `rows` feature vectors stored row-major in `features`;
    /// returns `rows × classNames.count` values, computed in `Float` like the exported models.
    /// Throws for an invalid head, the wrong feature count or a NaN/infinite feature.
    public func logits(for features: [Float], rows: Int) throws -> [Float] {
        try model().logits(features, count: rows)
    }

    /// Class probabilities (`rows × classNames.count`, each row summing to 1) for row-major features.
    public func probabilities(for features: [Float], rows: Int) throws -> [Float] {
        try model().probabilities(features, count: rows)
    }
}

/// A fully connected layer `y = W·x + b`, with `W` stored `outputs × inputs` row-major
/// (the layout of ONNX `Gemm` with `transB = 1` and of PyTorch's `Linear.weight`).
public struct DenseLayer: Sendable, Equatable {
    /// `outputs × inputs` values, row-major: row `o` holds the weights feeding output `o`.
    public var weights: [Float]
    /// One bias per output.
    public var bias: [Float]
    /// Width of the input vector.
    public var inputs: Int
    /// Width of the output vector.
    public var outputs: Int

    /// Gathers a layer's parameters; `ExportedHead.validate()` checks that the counts agree.
    public init(weights: [Float], bias: [Float], inputs: Int, outputs: Int) {
        self.weights = weights
        self.bias = bias
        self.inputs = inputs
        self.outputs = outputs
    }
}

/// Why an export or a read of a head artefact failed; each case says what to fix.
public enum HeadExportError: Error, CustomStringConvertible, Equatable {
    /// The head's parts do not fit together (shapes, counts or non-finite numbers).
    case invalidHead(String)
    /// A file is not a well-formed artefact of the expected kind.
    case malformedFile(path: String, reason: String)
    /// The backbone model cannot carry the head (missing node, unsupported opset, name clash).
    case incompatibleBackbone(String)
    /// Arguments to an export disagree with each other (for example counts that do not match).
    case invalidArguments(String)

    /// A one-line explanation for logs and command-line errors.
    public var description: String {
        switch self {
        case .invalidHead(let reason): return "invalid head: \(reason)"
        case .malformedFile(let path, let reason): return "\(path): \(reason)"
        case .incompatibleBackbone(let reason): return "incompatible backbone: \(reason)"
        case .invalidArguments(let reason): return "invalid arguments: \(reason)"
        }
    }
}
