/// In-place Concat, planned: which tensors are written straight into their channel slice of a
/// Concat's buffer, so that the Concat itself copies nothing.
///
/// Why only batch 1: oneDNN 2.6's JIT convolution, pooling and batch-normalization kernels accept
/// only dense tensors. A channel slice of a wider buffer (`dnnl_memory_desc_init_submemory`) is a
/// strided view for batch > 1, and every such view — nChw16c, NCHW or NHWC, at any channel
/// offset, as source or as destination — gets the reference kernel. With batch 1, though, channels
/// are the outermost dimension of nChw16c (and of NCHW): a slice starting at a multiple of 16 is
/// itself a dense nChw16c tensor at a byte offset into the buffer, which the JIT kernels take.
///
/// The plan is a set of *roots* (one buffer each, the size of a Concat's output) and a *region*
/// (root, first channel, channel count) for every placed tensor: the inputs of a root Concat sit
/// side by side in it, and a Concat whose inputs are consecutive regions of a root (DenseNet's
/// growing prefixes `[x, y1 … yk]` of its block's final `[x, y1 … yL]`) is itself a region of that
/// root. Lowering (`CompiledNetwork.output`, the `.concat` case) turns regions into memory.
struct ConcatPlacement {
    struct Root {
        /// The dims of the root Concat's output, `[1, C, H, W]`.
        var dims: [Int]
        /// The last step (index in `Plan.steps`) that is a placed Concat of this root: after it,
        /// nothing new is placed in the root, and its buffer lives only as long as its views.
        var lastConcat: Int
    }

    /// Where a tensor lives: `channels` channels from `channelOffset` of root `root`.
    struct Region: Equatable {
        var root: Int
        var channelOffset: Int
        var channels: Int
    }

    private(set) var roots: [Root] = []
    private(set) var regions: [String: Region] = [:]

    /// No placement at all (int8 networks, or when disabled).
    init() {}

    /// Plans the in-place Concats of `plan` for a channel block of `channelBlock` (16 on AVX-512).
    ///
    /// A Concat is placed when it joins channels (axis 1) of 4-D tensors with batch 1, each input
    /// is computed by a step that is not itself a Concat (a Concat's output already lives in its
    /// own root), no input appears twice, and every input but the last has a multiple of
    /// `channelBlock` channels (so that each region starts on a block boundary). Longer Concats
    /// are planned first, so a chain of prefixes shares the buffer of its longest member. A tensor
    /// lives in one place only: a Concat whose inputs are already placed elsewhere, or not
    /// consecutively, stays a copying Concat.
    init(plan: Plan, channelBlock: Int) {
        var producers: [String: Op] = [:]
        for step in plan.steps { producers[step.output] = step.op }
        var candidates: [(index: Int, step: Step)] = []
        for (index, step) in plan.steps.enumerated() {
            guard case .concat(let axis) = step.op, axis == 1, step.inputs.count >= 2,
                  let dims = plan.shapes[step.output], dims.count == 4, dims[0] == 1,
                  Set(step.inputs).count == step.inputs.count else { continue }
            let eligible = step.inputs.enumerated().allSatisfy { position, name in
                guard let op = producers[name], let shape = plan.shapes[name] else { return false }
                if case .concat = op { return false }
                return position == step.inputs.count - 1 || shape[1] % channelBlock == 0
            }
            if eligible { candidates.append((index, step)) }
        }
        candidates.sort { ($0.step.inputs.count, -$0.index) > ($1.step.inputs.count, -$1.index) }
        for (index, step) in candidates {
            let dims = plan.shapes[step.output]!
            let placed = step.inputs.compactMap { regions[$0] }
            if placed.isEmpty {
                roots.append(Root(dims: dims, lastConcat: index))
                var offset = 0
                for name in step.inputs {
                    let channels = plan.shapes[name]![1]
                    regions[name] = Region(root: roots.count - 1, channelOffset: offset, channels: channels)
                    offset += channels
                }
                regions[step.output] = Region(root: roots.count - 1, channelOffset: 0, channels: dims[1])
            } else if placed.count == step.inputs.count, placed.allSatisfy({ $0.root == placed[0].root }),
                      zip(placed, placed.dropFirst()).allSatisfy({ $0.channelOffset + $0.channels == $1.channelOffset }) {
                let root = placed[0].root
                regions[step.output] = Region(root: root, channelOffset: placed[0].channelOffset, channels: dims[1])
                roots[root].lastConcat = max(roots[root].lastConcat, index)
            }
        }
    }
}
