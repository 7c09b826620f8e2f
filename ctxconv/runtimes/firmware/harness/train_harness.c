/* Trains one block of a generated ctxconv library in place and records every step.
 *
 * Input file (little-endian): int32 steps, batch, block, seed, stochastic, in_zero_point;
 * float32 lr, in_scale; the block's initial state (ctxconv_train.h order: conv_q, conv_s,
 * conv_b, head_q, head_s, head_b); then per step `batch` raw images (CTXCONV_INPUT_BYTES
 * uint8 each) and their `batch` uint8 labels. The frozen blocks before `block` run through
 * the generated library (int8, bit-exact with the reference kernels).
 * Output file: per step float32 loss, int32 correct, int32 rescaled, the counter ticks of
 * the frozen prefix and of the training step (uint32 x 2 each); then the final state,
 * the calibration ticks (uint32 x 2) and the stack high-water mark in bytes. */
#include <stdint.h>
#include <string.h>

#include "ctxconv_model.h"
#include "ctxconv_train.h"
#include "platform.h"

static uint8_t pixels[CTXCONV_INPUT_BYTES];
static uint8_t labels[CTXCONV_TRAIN_BATCH];

static void put(const void *p, int32_t n)
{
    if (platform_write(p, n)) {
        platform_exit(3);
    }
}

static void get(void *p, int32_t n)
{
    if (platform_read(p, n)) {
        platform_log("error: input file too short\n");
        platform_exit(2);
    }
}

static void put_ticks(uint64_t t)
{
    const uint32_t w[2] = {(uint32_t)t, (uint32_t)(t >> 32)};
    put(w, sizeof w);
}

static void marker(int32_t step)
{
    platform_marker("train step", &step, 1);
}

static void state(int32_t write)
{
#define TRAIN_IO(ptr, n) (write ? put((ptr), (n)) : get((ptr), (n)))
    TRAIN_IO(ctxconv_train_conv_q, sizeof ctxconv_train_conv_q);
    TRAIN_IO(ctxconv_train_conv_s, sizeof ctxconv_train_conv_s);
    TRAIN_IO(ctxconv_train_conv_b, sizeof ctxconv_train_conv_b);
    TRAIN_IO(ctxconv_train_head_q, sizeof ctxconv_train_head_q);
    TRAIN_IO(ctxconv_train_head_s, sizeof ctxconv_train_head_s);
    TRAIN_IO(ctxconv_train_head_b, sizeof ctxconv_train_head_b);
#undef TRAIN_IO
}

int main(int argc, char **argv)
{
    const char *in_path = argc > 2 ? argv[1] : "inputs.bin";
    const char *out_path = argc > 2 ? argv[2] : "outputs.bin";
    int32_t h[6];
    float f[2];
    platform_init();
    if (platform_open(in_path, out_path)) {
        platform_log("error: cannot open the input or output file\n");
        platform_exit(2);
    }
    get(h, sizeof h);
    get(f, sizeof f);
    const int32_t steps = h[0], batch = h[1], block = h[2];
    if (batch < 1 || batch > CTXCONV_TRAIN_BATCH || block < 0 || block >= CTXCONV_NUM_BLOCKS) {
        platform_log("error: batch or block out of range for this build\n");
        platform_exit(2);
    }
    ctxconv_train_in_zero_point = h[5];
    ctxconv_train_in_scale = f[1];
    state(0);
    for (int32_t s = 0; s < steps; ++s) {
        uint64_t prefix = 0;
        for (int32_t r = 0; r < batch; ++r) {
            get(pixels, sizeof pixels);
            const uint64_t t0 = platform_ticks();
            ctxconv_quantize_image(pixels, ctxconv_input_buffer());
            const int8_t *x = ctxconv_input_buffer();
            for (int32_t b = 0; b < block; ++b) {
                ctxconv_run_block(b, 0);
                x = ctxconv_block_features(b);
            }
            ctxconv_train_set_input(r, x);
            __asm__ volatile("" ::: "memory");
            prefix += platform_ticks() - t0;
        }
        get(labels, batch);
        marker(s);
        const uint64_t t0 = platform_ticks();
        const ctxconv_train_step_result res =
            ctxconv_train_step(labels, batch, f[0], (uint32_t)s, (uint32_t)h[3], h[4]);
        __asm__ volatile("" ::: "memory");
        const uint64_t t1 = platform_ticks();
        put(&res.loss, 4);
        put(&res.correct, 4);
        put(&res.rescaled, 4);
        put_ticks(prefix);
        put_ticks(t1 - t0);
    }
    state(1);
    platform_finish();
    return 0;
}
