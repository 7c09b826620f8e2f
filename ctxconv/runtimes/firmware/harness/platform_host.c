/* The harness's platform on the build machine: stdio files, no counter. */
#include <stdio.h>
#include <stdlib.h>

#include "platform.h"

static FILE *in_file, *out_file;

void platform_init(void) {}

int32_t platform_open(const char *in_path, const char *out_path)
{
    in_file = fopen(in_path, "rb");
    out_file = fopen(out_path, "wb");
    return in_file && out_file ? 0 : -1;
}

int32_t platform_read(void *buf, int32_t n)
{
    return fread(buf, 1, (size_t)n, in_file) == (size_t)n ? 0 : -1;
}

int32_t platform_write(const void *buf, int32_t n)
{
    return fwrite(buf, 1, (size_t)n, out_file) == (size_t)n ? 0 : -1;
}

void platform_close(void)
{
    fclose(in_file);
    fclose(out_file);
}

void platform_log(const char *text)
{
    fputs(text, stdout);
    fflush(stdout);
}

uint64_t platform_ticks(void) { return 0; }
uint64_t platform_calibrate(void) { return 0; }
uint32_t platform_stack_used(void) { return 0; }

void platform_exit(int32_t code) { exit(code); }
