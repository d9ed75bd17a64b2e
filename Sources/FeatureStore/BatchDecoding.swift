import FeatureCodec
import WireProtocol

extension DecodedBatch {
    /// Decodes `batch`'s payload into little-endian rows of `dtype`: decompressed straight into place when
    /// the wire already carries `dtype` (the usual f16 → f16), converted otherwise. Throws when the payload
    /// does not decode to `rawLength` bytes.
    public init(decoding batch: FeatureBatch, as dtype: FeatureDType) throws {
        let rawLength = Int(batch.rawLength)
        let bytes: [UInt8]
        if batch.dtype == dtype {
            bytes = try batch.payload.withUnsafeBytes { payload in
                try [UInt8](unsafeUninitializedCapacity: rawLength) { buffer, initialized in
                    try FeatureCodec.decodeRaw(payload, dtype: batch.dtype, codec: batch.codec, rawLength: rawLength,
                                               into: UnsafeMutableRawBufferPointer(buffer))
                    initialized = rawLength
                }
            }
        } else {
            let values = try batch.payload.withUnsafeBytes {
                try FeatureCodec.decode($0, dtype: batch.dtype, codec: batch.codec, rawLength: rawLength)
            }
            bytes = dtype.littleEndianBytes(of: values)
        }
        self.init(shardID: batch.shardID, attempt: batch.attempt, shardItemCount: batch.shardItemCount, offsets: batch.offsets,
                  indexes: batch.indexes, labels: batch.labels, keys: batch.keys, deadLetters: batch.deadLetters,
                  dtype: dtype, featureBytes: bytes)
    }
}
