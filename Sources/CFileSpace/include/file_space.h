// Linux's fallocate(2), which Swift's Glibc module does not expose (glibc declares it only under
// _GNU_SOURCE). Kept apart from the SIMD kernels: this is file-system glue, not arithmetic.
#ifndef FS_FILE_SPACE_H
#define FS_FILE_SPACE_H

#include <sys/types.h>

/// Reserves disk blocks for bytes [offset, offset + length) of the open file `fd` without changing
/// its size (FALLOC_FL_KEEP_SIZE), so later writes there neither allocate blocks one page at a
/// time nor run out of space. Returns 0, or -1 with errno set (EOPNOTSUPP where the file system
/// cannot; ENOSPC when the disk is full). Elsewhere than Linux it always fails with EOPNOTSUPP.
int fs_reserve_space(int fd, off_t offset, off_t length);

#endif
