#!/usr/bin/env python3
"""Writes the coordinator-journal test vectors (Protocols/vectors/journal/*.hex) from Protocols/JOURNAL.md.

Independent of the Swift CoordinatorJournal, standard library only, deterministic:

    python3 Protocols/vectors/journal/generate.py          # rewrite
    python3 Protocols/vectors/journal/generate.py --check  # exit 1 if the committed files differ
"""
import os
import struct
import sys
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from generate import crc32c, to_hex, write_or_check  # noqa: E402  (shared with the wire vectors)

HEADER, COMMITTED, ATTEMPTS_RESERVED, POISONED, CHECKPOINT, SEALED = 1, 2, 3, 4, 5, 6


def record(payload, checksum=crc32c):
    length = struct.pack("<I", len(payload))
    return length + struct.pack("<I", checksum(length + payload)) + payload


def header(version, fingerprint, shard_count, shard_size):
    return bytes([HEADER]) + b"FSCJ" + struct.pack("<IQII", version, fingerprint, shard_count, shard_size)


def committed(shard, attempt):
    return bytes([COMMITTED]) + struct.pack("<II", shard, attempt)


def reserved(through):
    return bytes([ATTEMPTS_RESERVED]) + struct.pack("<I", through)


def poisoned(shard, offset, losses):
    return bytes([POISONED]) + struct.pack("<III", shard, offset, losses)


def checkpoint(items, dead_letters, records_crc, keys_crc, dead_letters_crc):
    return bytes([CHECKPOINT]) + struct.pack("<QQIII", items, dead_letters, records_crc, keys_crc, dead_letters_crc)


def sealed(content_id, entries):
    return bytes([SEALED]) + struct.pack("<QQ", content_id, entries)


FINGERPRINT = 0x0123_4567_89AB_CDEF
JOB_ID = 0xFEED_FACE_CAFE_BEEF

VECTORS = {
    "journal_v4_growing_plan": (
        "valid: version 4, a plan grown while scanning (header: job id 0xfeedfacecafebeef, 0 shards, shards of 4); "
        "checkpoint of 9 items and 1 dead letter (CRCs 0x11111111, 0x22222222, 0x33333333), reserve attempts through 64, "
        "commit shard 1 attempt 2, checkpoint of 17 items and 2 dead letters, poison verdict shard 3 offset 1 after 3 "
        "losses, commit shard 4 attempt 7, seal: content id 0x0102030405060708, 21 entries",
        b"".join(record(p) for p in [header(4, JOB_ID, 0, 4), checkpoint(9, 1, 0x11111111, 0x22222222, 0x33333333),
                                     reserved(64), committed(1, 2),
                                     checkpoint(17, 2, 0x44444444, 0x55555555, 0x66666666), poisoned(3, 1, 3),
                                     committed(4, 7), sealed(0x0102030405060708, 21)])),
    "journal_v4_commit_beyond_checkpoint_is_damage": (
        "damaged: version 4 growing plan whose only checkpoint (5 entries) offered shards 0 and 1 of 4, with a commit "
        "of shard 2; refused naming offset 70",
        b"".join(record(p) for p in [header(4, JOB_ID, 0, 4), checkpoint(5, 0, 1, 2, 3), committed(2, 1)])),
    "journal_v3_plan_commits_reservation_poison": (
        "valid: version 3, plan fingerprint 0x0123456789abcdef, 10 shards of 4; reserve attempts through 64, "
        "commit shard 3 attempt 5, poison verdict shard 6 offset 2 after 3 losses, commit shard 0 attempt 9, "
        "commit shard 3 attempt 7 (ignored: the first commit wins), verdict shard 6 offset 2 again (ignored)",
        b"".join(record(p) for p in [header(3, FINGERPRINT, 10, 4), reserved(64), committed(3, 5), poisoned(6, 2, 3),
                                     committed(0, 9), committed(3, 7), poisoned(6, 2, 4)])),
    "journal_v2_poison_is_damage": (
        "damaged: version 2 with a poison verdict record, which version 2 does not have; refused naming offset 50",
        b"".join(record(p) for p in [header(2, FINGERPRINT, 10, 4), committed(3, 5), poisoned(6, 2, 3)])),
    "journal_v2_plan_commits_reservation": (
        "valid (read, not written): version 2, plan fingerprint 0x0123456789abcdef, 10 shards of 4; reserve attempts "
        "through 64, commit shard 3 attempt 5, commit shard 0 attempt 9, commit shard 3 attempt 7 (ignored: the first commit wins)",
        b"".join(record(p) for p in [header(2, FINGERPRINT, 10, 4), reserved(64), committed(3, 5),
                                     committed(0, 9), committed(3, 7)])),
    "journal_v1_crc32": (
        "old: version 1 (records checksummed with zlib CRC-32), same plan, commit shard 3 attempt 5; "
        "a reader of versions 2 to 4 refuses it naming the version",
        b"".join(record(p, zlib.crc32) for p in [header(1, FINGERPRINT, 10, 4), committed(3, 5)])),
}


def main():
    files = {name + ".hex": to_hex([comment], data) for name, (comment, data) in VECTORS.items()}
    write_or_check(HERE, files, "--check" in sys.argv)


if __name__ == "__main__":
    main()
