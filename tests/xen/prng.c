/* Pseudo-random bytes for the Xen tier's guests: `bulkhead-prng SEED BYTES` writes BYTES
 * of a xorshift64* stream to stdout. The guests' own /dev/urandom is avoided: reading it
 * under nested TCG has triple-faulted Linux PVH guests here. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: bulkhead-prng SEED BYTES\n");
        return 2;
    }
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (const char *p = argv[1]; *p; p++)
        x = (x ^ (uint8_t)*p) * 0x100000001b3ull;
    if (!x)
        x = 1;
    unsigned long long left = strtoull(argv[2], NULL, 10);
    static uint64_t buf[8192];
    while (left) {
        for (size_t i = 0; i < 8192; i++) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            buf[i] = x * 0x2545f4914f6cdd1dull;
        }
        size_t n = left < sizeof buf ? left : sizeof buf;
        const char *b = (const char *)buf;
        while (n) {
            ssize_t w = write(1, b, n);
            if (w <= 0)
                return 1;
            b += w;
            n -= w;
            left -= w;
        }
    }
    return 0;
}
