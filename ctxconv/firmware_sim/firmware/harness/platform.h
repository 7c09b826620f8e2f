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

#endif
