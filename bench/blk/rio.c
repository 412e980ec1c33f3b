/* rio: 4 KiB block I/O for bench/blk. `rio PATH MODE COUNT` with MODE seqr, seqw, randr
 * or randw: COUNT reads or writes of 4 KiB, sequential from offset 0 or at pseudo-random
 * 4 KiB-aligned offsets within the first COUNT*4 KiB... of the device (a fixed LCG, so the
 * guest and the host do the same offsets). O_DIRECT on block devices (every request goes to
 * the disk, not the page cache); a regular file gets buffered I/O and an fsync at the end. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: rio PATH seqr|seqw|randr|randw COUNT\n"); return 2; }
    const char *mode = argv[2];
    long count = atol(argv[3]);
    int wr = mode[strlen(mode) - 1] == 'w', rnd = mode[0] == 'r' && mode[1] == 'a';
    struct stat st;
    if (stat(argv[1], &st) != 0) { perror(argv[1]); return 1; }
    int flags = (wr ? O_RDWR : O_RDONLY) | (S_ISBLK(st.st_mode) ? O_DIRECT : 0);
    int fd = open(argv[1], flags);
    if (fd < 0) { perror(argv[1]); return 1; }
    off_t size = lseek(fd, 0, SEEK_END);
    long blocks = size / 4096;
    if (blocks < 1) { fprintf(stderr, "rio: %s is empty\n", argv[1]); return 1; }
    void *buf;
    if (posix_memalign(&buf, 4096, 4096)) return 1;
    memset(buf, 0x5a, 4096);
    unsigned long long x = 88172645463325252ULL;
    for (long i = 0; i < count; i++) {
        long b = i % blocks;
        if (rnd) { x = x * 6364136223846793005ULL + 1442695040888963407ULL; b = (long)((x >> 33) % (unsigned long long)blocks); }
        ssize_t n = wr ? pwrite(fd, buf, 4096, (off_t)b * 4096) : pread(fd, buf, 4096, (off_t)b * 4096);
        if (n != 4096) { perror("rio: I/O"); return 1; }
    }
    if (wr && fsync(fd) != 0) { perror("rio: fsync"); return 1; }
    return 0;
}
