/* TFLite Micro (with the CMSIS-NN kernels) running an export's block files on a bare-metal
 * Cortex-M, for the side-by-side anchor of benchmarks/tflm_mcu_bench.py.
 *
 * It links with the firmware harness's own platform (ctxconv/runtimes/firmware/harness/
 * platform_arm.c: start-up code, semihosting files, SysTick as an instruction counter under
 * QEMU -icount, painted stack). The models come from the generated tflm_models.h/.cc: each
 * block's .tflite as a C array, the ops they use (TFLM_OPS) and the sizes below.
 *
 * Two ways to hold the arenas, both run on every image:
 *   per-block: one interpreter per block, each in its own arena sized to what it used in a
 *              probe (arena_used_bytes() on the whole pool), built once; block b's features
 *              are copied straight into block b+1's input tensor.
 *   shared:    one arena for all blocks, sized for the largest; per block an interpreter is
 *              built in it (AllocateTensors), run and destroyed; the features go through a
 *              hand-off buffer (TFLM_HANDOFF_BYTES) to the next block.
 *
 * Input file: int32 count, then count int8 inputs of block 0 (TFLM_INPUT_BYTES each).
 * Output file, per image: per-block mode, for each block its outputs (int8, in the model's
 * output order) and its Invoke ticks (uint32 x 2), then the image's ticks (uint32 x 2: the
 * input copy, every Invoke and every hand-off); shared mode, for each block its outputs, the
 * ticks of building it (interpreter + AllocateTensors + destruction) and of its Invoke, then
 * the image's ticks (all of these plus the copies). Trailer: per block uint32 probe bytes,
 * per-block arena used, per-block arena size, shared arena used (largest over images),
 * number of outputs and TFLM_MAX_OUTPUTS output sizes; uint32 shared arena size, hand-off
 * bytes; then the platform's trailer (calibration ticks, stack high-water mark).
 */
#include <stdint.h>
#include <string.h>

#include <new>

#include "tensorflow/lite/micro/cortex_m_generic/debug_log_callback.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_mutable_op_resolver.h"
#include "tensorflow/lite/schema/schema_generated.h"
#include "tflm_models.h"

extern "C" {
#include "platform.h"
}

#define TFLM_MAX_OUTPUTS 4
#define ALIGN16(n) (((n) + 15u) & ~(size_t)15u)

using Resolver = tflite::MicroMutableOpResolver<TFLM_NUM_OPS>;

/* Everything TFLM needs besides the arenas lives here, statically (counted as static RAM). */
alignas(16) static uint8_t tflm_arena_pool[TFLM_ARENA_POOL_BYTES];
alignas(16) static int8_t tflm_handoff[TFLM_HANDOFF_BYTES];
alignas(8) static uint8_t resolver_mem[sizeof(Resolver)];
alignas(8) static uint8_t interp_mem[TFLM_NUM_BLOCKS][sizeof(tflite::MicroInterpreter)];
alignas(8) static uint8_t shared_mem[sizeof(tflite::MicroInterpreter)];

static uint32_t probe_bytes[TFLM_NUM_BLOCKS], used_bytes[TFLM_NUM_BLOCKS];
static uint32_t arena_bytes[TFLM_NUM_BLOCKS], shared_used[TFLM_NUM_BLOCKS];

static void fail(const char *what)
{
    platform_log(what);
    platform_exit(2);
}

static void put(const void *p, size_t n)
{
    if (platform_write(p, (int32_t)n)) {
        platform_exit(3);
    }
}

static void put_u32(uint32_t v) { put(&v, sizeof v); }

static void put_ticks(uint64_t t)
{
    const uint32_t w[2] = {(uint32_t)t, (uint32_t)(t >> 32)};
    put(w, sizeof w);
}

static void marker(const char *what, int32_t image, int32_t block)
{
    const int32_t at[2] = {image, block};
    platform_marker(what, at, 2);
}

static void put_outputs(tflite::MicroInterpreter *it)
{
    for (size_t o = 0; o < it->outputs_size(); ++o) {
        const TfLiteTensor *t = it->output(o);
        put(t->data.int8, t->bytes);
    }
}

static tflite::MicroInterpreter *build(void *where, int32_t b, uint8_t *arena, size_t bytes,
                                       const Resolver &resolver)
{
    const tflite::Model *model = tflite::GetModel(tflm_models[b]);
    if (model->version() != TFLITE_SCHEMA_VERSION) {
        fail("error: model schema version differs from this TFLM's\n");
    }
    auto *it = new (where) tflite::MicroInterpreter(model, resolver, arena, bytes);
    if (it->AllocateTensors() != kTfLiteOk) {
        fail("error: AllocateTensors failed (arena too small or an op missing)\n");
    }
    return it;
}

static void log_cb(const char *s) { platform_log(s); }

int main(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    platform_init();
    RegisterDebugLogCallback(log_cb);
    auto *resolver = new (resolver_mem) Resolver();
#define X(add)                                    \
    if (resolver->add() != kTfLiteOk) {           \
        fail("error: cannot register " #add "\n"); \
    }
    TFLM_OPS
#undef X
    if (platform_open("inputs.bin", "outputs.bin")) {
        fail("error: cannot open the input or output file\n");
    }
    int32_t count = 0;
    if (platform_read(&count, sizeof count)) {
        fail("error: cannot read the input file\n");
    }

    /* probe: what each block uses with the whole pool */
    for (int32_t b = 0; b < TFLM_NUM_BLOCKS; ++b) {
        marker("probe", 0, b);
        auto *it = build(shared_mem, b, tflm_arena_pool, sizeof tflm_arena_pool, *resolver);
        probe_bytes[b] = (uint32_t)it->arena_used_bytes();
        it->~MicroInterpreter();
    }
    /* per-block arenas, each as large as its probe, one after another; then the shared one */
    size_t offset = 0, shared_bytes = 0;
    tflite::MicroInterpreter *blocks[TFLM_NUM_BLOCKS];
    for (int32_t b = 0; b < TFLM_NUM_BLOCKS; ++b) {
        /* the probe's bytes, rounded up to the 16-byte alignment of both arena ends */
        arena_bytes[b] = (uint32_t)ALIGN16(probe_bytes[b]);
        shared_bytes = arena_bytes[b] > shared_bytes ? arena_bytes[b] : shared_bytes;
        offset += ALIGN16(arena_bytes[b]);
    }
    if (offset + shared_bytes > sizeof tflm_arena_pool) {
        fail("error: TFLM_ARENA_POOL_BYTES too small for the per-block and shared arenas\n");
    }
    uint8_t *shared_arena = tflm_arena_pool + offset;
    offset = 0;
    for (int32_t b = 0; b < TFLM_NUM_BLOCKS; ++b) {
        marker("allocate", 0, b);
        blocks[b] = build(interp_mem[b], b, tflm_arena_pool + offset, arena_bytes[b], *resolver);
        used_bytes[b] = (uint32_t)blocks[b]->arena_used_bytes();
        offset += ALIGN16(arena_bytes[b]);
        if (blocks[b]->inputs_size() != 1 || blocks[b]->outputs_size() > TFLM_MAX_OUTPUTS) {
            fail("error: a block with more than one input or too many outputs\n");
        }
    }

    for (int32_t image = 0; image < count; ++image) {
        if (platform_read(tflm_handoff, TFLM_INPUT_BYTES)) {
            fail("error: input file too short\n");
        }
        /* per-block arenas */
        uint64_t invoke[TFLM_NUM_BLOCKS];
        const uint64_t t0 = platform_ticks();
        memcpy(blocks[0]->input(0)->data.int8, tflm_handoff, TFLM_INPUT_BYTES);
        for (int32_t b = 0; b < TFLM_NUM_BLOCKS; ++b) {
            const uint64_t s = platform_ticks();
            const TfLiteStatus status = blocks[b]->Invoke();
            __asm__ volatile("" ::: "memory");
            invoke[b] = platform_ticks() - s;
            if (status != kTfLiteOk) {
                marker("block", image, b);
                fail("error: Invoke failed\n");
            }
            if (b + 1 < TFLM_NUM_BLOCKS) {
                const TfLiteTensor *f = blocks[b]->output(tflm_features_output[b]);
                TfLiteTensor *in = blocks[b + 1]->input(0);
                if (f->bytes != in->bytes) {
                    fail("error: a block's features do not fit the next block's input\n");
                }
                memcpy(in->data.int8, f->data.int8, f->bytes);
            }
        }
        __asm__ volatile("" ::: "memory");
        const uint64_t per_block_image = platform_ticks() - t0;
        for (int32_t b = 0; b < TFLM_NUM_BLOCKS; ++b) {
            put_outputs(blocks[b]);
            put_ticks(invoke[b]);
        }
        put_ticks(per_block_image);

        /* one shared arena */
        uint64_t shared_image = 0;
        for (int32_t b = 0; b < TFLM_NUM_BLOCKS; ++b) {
            marker("block", image, b);
            const uint64_t s0 = platform_ticks();
            tflite::MicroInterpreter *it = build(shared_mem, b, shared_arena, shared_bytes,
                                                 *resolver);
            const uint64_t s1 = platform_ticks();
            TfLiteTensor *in = it->input(0);
            memcpy(in->data.int8, tflm_handoff, in->bytes);
            const uint64_t s2 = platform_ticks();
            const TfLiteStatus status = it->Invoke();
            __asm__ volatile("" ::: "memory");
            const uint64_t s3 = platform_ticks();
            if (status != kTfLiteOk) {
                fail("error: Invoke failed (shared arena)\n");
            }
            const TfLiteTensor *f = it->output(tflm_features_output[b]);
            if (f->bytes > sizeof tflm_handoff) {
                fail("error: features larger than the hand-off buffer\n");
            }
            memcpy(tflm_handoff, f->data.int8, f->bytes);
            const uint64_t s4 = platform_ticks();
            const uint32_t used = (uint32_t)it->arena_used_bytes();
            shared_used[b] = used > shared_used[b] ? used : shared_used[b];
            put_outputs(it);
            const uint64_t s5 = platform_ticks();
            it->~MicroInterpreter();
            __asm__ volatile("" ::: "memory");
            const uint64_t s6 = platform_ticks();
            put_ticks((s1 - s0) + (s6 - s5));
            put_ticks(s3 - s2);
            shared_image += (s4 - s0) + (s6 - s5);
        }
        put_ticks(shared_image);
    }

    for (int32_t b = 0; b < TFLM_NUM_BLOCKS; ++b) {
        put_u32(probe_bytes[b]);
        put_u32(used_bytes[b]);
        put_u32(arena_bytes[b]);
        put_u32(shared_used[b]);
        put_u32((uint32_t)blocks[b]->outputs_size());
        for (size_t o = 0; o < TFLM_MAX_OUTPUTS; ++o) {
            put_u32(o < blocks[b]->outputs_size() ? (uint32_t)blocks[b]->output(o)->bytes : 0u);
        }
    }
    put_u32((uint32_t)shared_bytes);
    put_u32((uint32_t)sizeof tflm_handoff);
    platform_finish();
    return 0;
}

/* No heap on this target: TFLM never frees, but virtual destructors name operator delete. */
void operator delete(void *) noexcept { fail("fault: operator delete called\n"); }
void operator delete(void *, size_t) noexcept { fail("fault: operator delete called\n"); }
extern "C" void __cxa_pure_virtual(void) { fail("fault: pure virtual call\n"); }
