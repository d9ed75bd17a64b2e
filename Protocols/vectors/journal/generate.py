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

HEADER, COMMITTED, ATTEMPTS_RESERVED, POISONED = 1, 2, 3, 4


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


FINGERPRINT = 0x0123_4567_89AB_CDEF

VECTORS = {
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
        "a reader of versions 2 and 3 refuses it naming the version",
        b"".join(record(p, zlib.crc32) for p in [header(1, FINGERPRINT, 10, 4), committed(3, 5)])),
}


def main():
    files = {name + ".hex": to_hex([comment], data) for name, (comment, data) in VECTORS.items()}
    write_or_check(HERE, files, "--check" in sys.argv)


if __name__ == "__main__":
    main()
