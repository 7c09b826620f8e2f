/* The harness's platform on a bare-metal Cortex-M under QEMU: start-up code and vector
 * table, semihosting for files and the console, SysTick as an instruction counter (QEMU
 * with -icount advances the clock per instruction), a painted stack. */
#include <stdint.h>
#include <string.h>

#include "platform.h"

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _sstack, _estack;
int main(int argc, char **argv);

#define STACK_PAINT 0xC0FFEE11u
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

/* ------------------------------------------------------------------ semihosting */

static int32_t semihost(int32_t op, const void *arg)
{
    register int32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

enum { SYS_OPEN = 0x01, SYS_CLOSE = 0x02, SYS_WRITE0 = 0x04, SYS_WRITE = 0x05,
       SYS_READ = 0x06, SYS_EXIT = 0x18 };

static int32_t in_handle = -1, out_handle = -1;

static int32_t sh_open(const char *path, int32_t mode)
{
    const uint32_t args[3] = {(uint32_t)path, (uint32_t)mode, (uint32_t)strlen(path)};
    return semihost(SYS_OPEN, args);
}

int32_t platform_open(const char *in_path, const char *out_path)
{
    in_handle = sh_open(in_path, 1);   /* "rb" */
    out_handle = sh_open(out_path, 5); /* "wb" */
    return in_handle >= 0 && out_handle >= 0 ? 0 : -1;
}

int32_t platform_read(void *buf, int32_t n)
{
    const uint32_t args[3] = {(uint32_t)in_handle, (uint32_t)buf, (uint32_t)n};
    return semihost(SYS_READ, args) == 0 ? 0 : -1; /* returns the bytes NOT read */
}

int32_t platform_write(const void *buf, int32_t n)
{
    const uint32_t args[3] = {(uint32_t)out_handle, (uint32_t)buf, (uint32_t)n};
    return semihost(SYS_WRITE, args) == 0 ? 0 : -1;
}

void platform_close(void)
{
    semihost(SYS_CLOSE, &in_handle);
    semihost(SYS_CLOSE, &out_handle);
}

void platform_log(const char *text) { semihost(SYS_WRITE0, text); }

void platform_exit(int32_t code)
{
    /* ADP_Stopped_ApplicationExit ends QEMU with status 0; RunTimeErrorUnknown with 1 */
    semihost(SYS_EXIT, (const void *)(code == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

/* ------------------------------------------------------------------ counter */

static volatile uint32_t systick_wraps;

void SysTick_Handler(void) { systick_wraps++; }

uint64_t platform_ticks(void)
{
    uint32_t w1, w2, v;
    do {
        w1 = systick_wraps;
        v = SYST_CVR;
        w2 = systick_wraps;
    } while (w1 != w2);
    return (uint64_t)w1 * 0x1000000u + (0xFFFFFFu - v);
}

uint64_t platform_calibrate(void)
{
    uint32_t n = 1000000u; /* 2 instructions per iteration */
    const uint64_t t0 = platform_ticks();
    /* unified syntax on every core (GCC hands Thumb-1 inline assembly over in divided) */
    __asm__ volatile(".syntax unified\n1: subs %0, %0, #1\n bne 1b" : "+l"(n) : : "cc");
    return platform_ticks() - t0;
}

/* ------------------------------------------------------------------ stack */

uint32_t platform_stack_used(void)
{
    const uint32_t *p = &_sstack;
    while (p < &_estack && *p == STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((const uint8_t *)&_estack - (const uint8_t *)p);
}

void platform_init(void)
{
    SYST_RVR = 0xFFFFFFu;
    SYST_CVR = 0;
    SYST_CSR = 7u; /* processor clock, interrupt on wrap, enabled */
    while (SYST_CVR == 0) {
        /* the first tick loads the reload value: count from there, not from 0 */
    }
}

/* ------------------------------------------------------------------ start-up */

void Reset_Handler(void)
{
    uint32_t *src = &_sidata, *dst = &_sdata;
    while (dst < &_edata) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss; ++dst) {
        *dst = 0;
    }
    uint32_t *limit = (uint32_t *)__builtin_frame_address(0) - 16;
    for (dst = &_sstack; dst < limit; ++dst) {
        *dst = STACK_PAINT;
    }
#if defined(__ARM_FP)
    SCB_CPACR |= 0xFu << 20; /* CP10, CP11: full access to the FPU */
    __asm__ volatile("dsb\n isb");
#endif
    platform_exit(main(0, 0));
}

static void fault(const char *what)
{
    platform_log(what);
    platform_exit(1);
}

void HardFault_Handler(void) { fault("fault: HardFault\n"); }
void MemManage_Handler(void) { fault("fault: MemManage\n"); }
void BusFault_Handler(void) { fault("fault: BusFault\n"); }
void UsageFault_Handler(void) { fault("fault: UsageFault\n"); }
void Default_Handler(void) { fault("fault: unexpected exception\n"); }

__attribute__((section(".vectors"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&_estack), Reset_Handler, Default_Handler, HardFault_Handler,
    MemManage_Handler, BusFault_Handler, UsageFault_Handler, 0, 0, 0, 0,
    Default_Handler, Default_Handler, 0, Default_Handler, SysTick_Handler,
};
