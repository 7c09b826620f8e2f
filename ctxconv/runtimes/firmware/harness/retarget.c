/* The C library's console on the emulated Cortex-M, as a firmware project retargets it:
 * printf's _write over semihosting, and _sbrk from a static heap (for stdio's buffers). */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "platform.h"

int _write(int fd, const char *buf, int n);
void *_sbrk(intptr_t increment);

int _write(int fd, const char *buf, int n)
{
    char chunk[65];
    (void)fd;
    for (int done = 0; done < n;) {
        const int len = n - done < 64 ? n - done : 64;
        memcpy(chunk, buf + done, (size_t)len);
        chunk[len] = 0;
        platform_log(chunk);
        done += len;
    }
    return n;
}

static uint8_t heap[4096] __attribute__((aligned(8)));
static size_t heap_used;

void *_sbrk(intptr_t increment)
{
    if (increment < 0 || (size_t)increment > sizeof heap - heap_used) {
        errno = ENOMEM;
        return (void *)-1;
    }
    void *p = heap + heap_used;
    heap_used += (size_t)increment;
    return p;
}
