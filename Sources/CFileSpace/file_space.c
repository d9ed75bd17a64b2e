#define _GNU_SOURCE
#include "file_space.h"

#include <errno.h>
#include <fcntl.h>

int fs_reserve_space(int fd, off_t offset, off_t length) {
#if defined(__linux__)
    return fallocate(fd, FALLOC_FL_KEEP_SIZE, offset, length);
#else
    (void)fd; (void)offset; (void)length;
    errno = EOPNOTSUPP;
    return -1;
#endif
}
