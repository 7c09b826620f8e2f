/* What the test harness needs from the machine it runs on: files, a counter, the stack. */
#ifndef CTXCONV_PLATFORM_H
#define CTXCONV_PLATFORM_H

#include <stdint.h>

void platform_init(void);
/* Open the input (read) and output (write) files; 0 on success. */
int32_t platform_open(const char *in_path, const char *out_path);
/* Read/write exactly n bytes; 0 on success. */
int32_t platform_read(void *buf, int32_t n);
int32_t platform_write(const void *buf, int32_t n);
void platform_close(void);
/* A line on the console (progress markers name the block that faults or hangs). */
void platform_log(const char *text);
/* Free-running counter (SysTick ticks on the emulated MCU, 0 on the host). */
uint64_t platform_ticks(void);
/* Ticks taken by a loop of 2 * 10^6 instructions (the counter's calibration). */
uint64_t platform_calibrate(void);
/* Bytes of stack ever used (painted stack), 0 where unknown. */
uint32_t platform_stack_used(void);
void platform_exit(int32_t code);

/* A progress line "what n1 n2\n" on the console (at most 3 numbers, each printed as
 * uint32: -1 reads 4294967295; `what` up to 32 characters): the last one names the block or
 * step that faulted or hung. */
static inline void platform_marker(const char *what, const int32_t *numbers, int32_t count)
{
    char line[72];
    int32_t i = 0;
    while (*what && i < 32) {
        line[i++] = *what++;
    }
    for (int32_t p = 0; p < count && p < 3; ++p) {
        char digits[10];
        int32_t n = 0;
        uint32_t v = (uint32_t)numbers[p];
        do {
            digits[n++] = (char)('0' + v % 10);
            v /= 10;
        } while (v);
        line[i++] = ' ';
        while (n) {
            line[i++] = digits[--n];
        }
    }
    line[i++] = '\n';
    line[i] = 0;
    platform_log(line);
}

/* The output file's trailer (calibration ticks as two uint32, the stack high-water mark),
 * then close, say done and exit 0. */
static inline void platform_finish(void)
{
    const uint64_t cal = platform_calibrate();
    const uint32_t trailer[3] = {(uint32_t)cal, (uint32_t)(cal >> 32), platform_stack_used()};
    if (platform_write(trailer, sizeof trailer)) {
        platform_exit(3);
    }
    platform_close();
    platform_log("done\n");
    platform_exit(0);
}

#endif
