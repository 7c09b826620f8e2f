/* Runs a generated ctxconv library on test images and records everything to compare.
 *
 * Input file: int32 count, int32 flags (bit 0: per-block outputs), then count raw images
 * (CTXCONV_INPUT_BYTES uint8 each). Output file, per image: with bit 0, for each block and
 * each of its passes (a contextual block: one per class) its int8 features and its int8
 * goodness output (score_bytes: K class scores, or one energy goodness), then the block's
 * counter ticks (uint32 x 2, all passes); then for each mode the int32
 * class scores and the ticks of the classify call. Trailer: calibration ticks (uint32 x 2)
 * and the stack high-water mark in bytes.
 */
#include <stdint.h>
#include <string.h>

#include "ctxconv_model.h"
#include "platform.h"

#ifndef CTXCONV_HARNESS_MODES
#error "define CTXCONV_HARNESS_MODES, e.g. -DCTXCONV_HARNESS_MODES=X(multipass)X(onepass)"
#endif

static uint8_t pixels[CTXCONV_INPUT_BYTES];
static int8_t context[CTXCONV_NUM_CLASSES];

static void put_ticks(uint64_t t)
{
    const uint32_t w[2] = {(uint32_t)t, (uint32_t)(t >> 32)};
    if (platform_write(w, sizeof w)) {
        platform_exit(3);
    }
}

static void put(const void *p, int32_t n)
{
    if (platform_write(p, n)) {
        platform_exit(3);
    }
}

static void marker(const char *what, int32_t image, int32_t block)
{
    const int32_t at[2] = {image, block};
    platform_marker(what, at, 2);
}

static void per_block(int32_t image)
{
    int8_t *input = ctxconv_input_buffer();
    ctxconv_quantize_image(pixels, input);
    for (int32_t b = 0; b < CTXCONV_NUM_BLOCKS; ++b) {
        const int32_t passes = ctxconv_blocks[b].contextual ? CTXCONV_NUM_CLASSES : 1;
        uint64_t ticks = 0;
        marker("block", image, b);
        for (int32_t k = 0; k < passes; ++k) {
            const int8_t *ctx = 0;
            if (ctxconv_blocks[b].contextual) {
                memset(context, CTXCONV_CONTEXT_OFF, sizeof context);
                context[k] = CTXCONV_CONTEXT_ON;
                ctx = context;
            }
            const uint64_t t0 = platform_ticks();
            const int8_t *scores = ctxconv_run_block(b, ctx);
            __asm__ volatile("" ::: "memory");
            ticks += platform_ticks() - t0;
            put(ctxconv_block_features(b), ctxconv_blocks[b].features_bytes);
            put(scores, ctxconv_blocks[b].score_bytes);
        }
        put_ticks(ticks);
    }
}

#define X(mode)                                                   \
    {                                                             \
        int32_t scores[CTXCONV_NUM_CLASSES];                      \
        marker("classify_" #mode, image, -1);                     \
        ctxconv_quantize_image(pixels, ctxconv_input_buffer());   \
        const uint64_t t0 = platform_ticks();                     \
        ctxconv_classify_##mode(ctxconv_input_buffer(), scores);  \
        __asm__ volatile("" ::: "memory");                        \
        const uint64_t t1 = platform_ticks();                     \
        put(scores, sizeof scores);                               \
        put_ticks(t1 - t0);                                       \
    }

int main(int argc, char **argv)
{
    const char *in_path = argc > 2 ? argv[1] : "inputs.bin";
    const char *out_path = argc > 2 ? argv[2] : "outputs.bin";
    int32_t header[2];
    platform_init();
    if (platform_open(in_path, out_path) || platform_read(header, sizeof header)) {
        platform_log("error: cannot open or read the input file\n");
        platform_exit(2);
    }
    for (int32_t image = 0; image < header[0]; ++image) {
        if (platform_read(pixels, sizeof pixels)) {
            platform_log("error: input file too short\n");
            platform_exit(2);
        }
        if (header[1] & 1) {
            per_block(image);
        }
        CTXCONV_HARNESS_MODES
    }
    platform_finish();
    return 0;
}
