/*
 * dd-peek DOMID GFN: writes one page of domain DOMID's memory (guest frame GFN) to
 * standard output.
 *
 * The post-mortem of a driver domain that Xen stopped behind its back (a triple fault;
 * tests/xen/scenarios/lib.sh, dd_postmortem) needs only the flight recorder's page
 * (kernel/src/machine/trace.rs; Bulkhead is identity-mapped, so the page's address in the image
 * is its guest frame). `xl dump-core` writes all of the domain's memory and took minutes
 * under nested TCG, twice per failed attempt; this maps the one page through
 * /dev/xen/privcmd, as the dump does for every page.
 *
 * Needs no Xen libraries or headers at build time: the one ioctl's argument is written
 * out below (Linux's privcmd ABI; its uapi header includes kernel-internal ones).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>
typedef unsigned long xen_pfn_t;

/* Linux's struct privcmd_mmapbatch_v2: map `num` frames of `dom` at `addr`. */
struct privcmd_mmapbatch_v2 {
    unsigned int num;
    uint16_t dom;
    uint64_t addr;
    const xen_pfn_t *arr;
    int *err;
};
#define IOCTL_PRIVCMD_MMAPBATCH_V2 _IOC(_IOC_NONE, 'P', 4, sizeof(struct privcmd_mmapbatch_v2))

#define PAGE 4096

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: dd-peek DOMID GFN\n");
        return 2;
    }
    char *end;
    unsigned long dom = strtoul(argv[1], &end, 0);
    if (end == argv[1] || *end || dom > 0x7fef) {
        fprintf(stderr, "dd-peek: bad domain id %s\n", argv[1]);
        return 2;
    }
    xen_pfn_t gfn = strtoul(argv[2], &end, 0);
    if (end == argv[2] || *end) {
        fprintf(stderr, "dd-peek: bad frame %s\n", argv[2]);
        return 2;
    }
    int fd = open("/dev/xen/privcmd", O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "dd-peek: /dev/xen/privcmd: %s\n", strerror(errno));
        return 1;
    }
    void *page = mmap(NULL, PAGE, PROT_READ, MAP_SHARED, fd, 0);
    if (page == MAP_FAILED) {
        fprintf(stderr, "dd-peek: mmap: %s\n", strerror(errno));
        return 1;
    }
    int err = 0;
    struct privcmd_mmapbatch_v2 batch = {
        .num = 1, .dom = (uint16_t)dom, .addr = (uintptr_t)page, .arr = &gfn, .err = &err,
    };
    if (ioctl(fd, IOCTL_PRIVCMD_MMAPBATCH_V2, &batch) < 0 || err) {
        fprintf(stderr, "dd-peek: mapping frame %#lx of domain %lu: %s\n", gfn, dom,
                strerror(err ? -err : errno));
        return 1;
    }
    size_t done = 0;
    while (done < PAGE) {
        ssize_t n = write(1, (char *)page + done, PAGE - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            fprintf(stderr, "dd-peek: write: %s\n", n < 0 ? strerror(errno) : "nothing written");
            return 1;
        }
        done += (size_t)n;
    }
    return 0;
}
