/*
 * xen-peer DOMID: the dom0 side of Bulkhead's `test-xen-peer` round trip.
 *
 * Reads <home>/data/peer-test/{gref,evtchn} written by Bulkhead, binds its event channel,
 * maps its grant and writes "peer-was-here" at offset 128, grants Bulkhead a page holding
 * "dom0-grant:DOMID" (its ref goes to peer-gref), notifies, then waits for Bulkhead's
 * notification and checks that Bulkhead wrote "bulkhead-mapped" at offset 64 of our page.
 * Prints one line per step; exit status 0 only if every step worked.
 *
 * Uses the kernel's /dev/xen/{evtchn,gntdev,gntalloc} interfaces directly (uapi headers)
 * and xenstore-read/xenstore-write, so it needs no Xen libraries at build time.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
/* The uapi headers use Xen's own type names without defining them. */
typedef uint16_t domid_t;
typedef uint32_t grant_ref_t;
#include <xen/evtchn.h>
#include <xen/gntalloc.h>
#include <xen/gntdev.h>

static char base[128];

static void fail(const char *what) {
    printf("xen-peer: FAIL: %s (%s)\n", what, strerror(errno));
    exit(1);
}

static int xs_read(const char *key, char *out, size_t n) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "xenstore-read %s/%s 2>/dev/null", base, key);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    if (!fgets(out, (int)n, p)) { pclose(p); return -1; }
    out[strcspn(out, "\n")] = 0;
    return pclose(p) == 0 ? 0 : -1;
}

static void xs_write(const char *key, const char *val) {
    char cmd[256];
    snprintf(cmd, sizeof cmd, "xenstore-write %s/%s %s", base, key, val);
    if (system(cmd) != 0) fail("xenstore-write");
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: xen-peer DOMID\n"); return 2; }
    unsigned domid = (unsigned)atoi(argv[1]);
    snprintf(base, sizeof base, "/local/domain/%u/data/peer-test", domid);
    setvbuf(stdout, NULL, _IOLBF, 0);

    char v[64];
    for (int i = 0; xs_read("ready", v, sizeof v) != 0; i++) {
        if (i > 600) { errno = ETIMEDOUT; fail("Bulkhead never wrote ready"); }
        usleep(200000);
    }
    if (xs_read("gref", v, sizeof v)) fail("read gref");
    unsigned gref = (unsigned)atoi(v);
    if (xs_read("evtchn", v, sizeof v)) fail("read evtchn");
    unsigned rport = (unsigned)atoi(v);
    printf("xen-peer: domain %u offers grant %u and event channel %u\n", domid, gref, rport);

    int ev = open("/dev/xen/evtchn", O_RDWR);
    if (ev < 0) fail("open /dev/xen/evtchn");
    struct ioctl_evtchn_bind_interdomain bind = { .remote_domain = domid, .remote_port = rport };
    int lport = ioctl(ev, IOCTL_EVTCHN_BIND_INTERDOMAIN, &bind);
    if (lport < 0) fail("bind interdomain");
    printf("xen-peer: bound local port %d to domain %u port %u\n", lport, domid, rport);
    /*
     * Xen marks a freshly bound interdomain port pending on the binding side. Take that
     * event now, so that every later event is one Bulkhead sent.
     */
    struct pollfd bpfd = { .fd = ev, .events = POLLIN };
    if (poll(&bpfd, 1, 2000) > 0) {
        unsigned fired;
        if (read(ev, &fired, sizeof fired) == sizeof fired && write(ev, &fired, sizeof fired) == sizeof fired)
            printf("xen-peer: consumed the bind-time event on port %u\n", fired);
    }

    int gd = open("/dev/xen/gntdev", O_RDWR);
    if (gd < 0) fail("open /dev/xen/gntdev");
    struct ioctl_gntdev_map_grant_ref map = { .count = 1 };
    map.refs[0].domid = domid;
    map.refs[0].ref = gref;
    if (ioctl(gd, IOCTL_GNTDEV_MAP_GRANT_REF, &map)) fail("gntdev map");
    char *theirs = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, gd, (off_t)map.index);
    if (theirs == MAP_FAILED) fail("mmap of Bulkhead's grant");
    char want[64];
    snprintf(want, sizeof want, "bulkhead-grant:%u", domid);
    if (strncmp(theirs, want, strlen(want))) { errno = EINVAL; fail("Bulkhead's page does not hold its greeting"); }
    memcpy(theirs + 128, "peer-was-here", 13);
    printf("xen-peer: mapped grant %u, read \"%s\", wrote our mark\n", gref, want);
    munmap(theirs, 4096);
    struct ioctl_gntdev_unmap_grant_ref unmap = { .index = map.index, .count = 1 };
    if (ioctl(gd, IOCTL_GNTDEV_UNMAP_GRANT_REF, &unmap)) fail("gntdev unmap");

    int ga = open("/dev/xen/gntalloc", O_RDWR);
    if (ga < 0) fail("open /dev/xen/gntalloc");
    struct ioctl_gntalloc_alloc_gref alloc = { .domid = (uint16_t)domid, .flags = GNTALLOC_FLAG_WRITABLE, .count = 1 };
    if (ioctl(ga, IOCTL_GNTALLOC_ALLOC_GREF, &alloc)) fail("gntalloc");
    char *ours = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, ga, (off_t)alloc.index);
    if (ours == MAP_FAILED) fail("mmap of our grant");
    memset(ours, 0, 4096);
    snprintf(ours, 64, "dom0-grant:%u", domid);
    snprintf(v, sizeof v, "%u", alloc.gref_ids[0]);
    xs_write("peer-gref", v);
    printf("xen-peer: granted page %u to domain %u\n", alloc.gref_ids[0], domid);

    struct ioctl_evtchn_notify note = { .port = (unsigned)lport };
    if (ioctl(ev, IOCTL_EVTCHN_NOTIFY, &note)) fail("notify");
    printf("xen-peer: notified port %d\n", lport);

    struct pollfd pfd = { .fd = ev, .events = POLLIN };
    if (poll(&pfd, 1, 180000) <= 0) { errno = ETIMEDOUT; fail("no notification from Bulkhead"); }
    unsigned fired;
    if (read(ev, &fired, sizeof fired) != sizeof fired) fail("read event");
    if (write(ev, &fired, sizeof fired) != sizeof fired) fail("unmask event");
    printf("xen-peer: notification from Bulkhead on port %u\n", fired);
    /* Bulkhead notifies only after writing our page. */
    if (memcmp(ours + 64, "bulkhead-mapped", 15)) { errno = EINVAL; fail("Bulkhead did not write our page"); }
    printf("xen-peer: Bulkhead mapped our grant and wrote \"bulkhead-mapped\"\n");

    munmap(ours, 4096);
    struct ioctl_gntalloc_dealloc_gref dealloc = { .index = alloc.index, .count = 1 };
    ioctl(ga, IOCTL_GNTALLOC_DEALLOC_GREF, &dealloc);
    xs_write("peer-done", "1");
    printf("xen-peer: PASS\n");
    return 0;
}
