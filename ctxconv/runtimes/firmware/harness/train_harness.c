/* Drives the training API of a generated ctxconv library (ctxconv_train.h) and records it.
 *
 * Input file (little-endian): int32 blocks, eval images, use_feed (1: raw images through
 * ctxconv_train_feed; 0: the harness runs the frozen blocks and calls
 * ctxconv_train_feed_input, timing the two apart). Then per trained block, in order:
 * int32 block, update, batch, stochastic, reinit, steps; uint32 seed, reinit seed;
 * float32 lr; then its steps x batch samples (CTXCONV_INPUT_BYTES uint8 pixels, one uint8
 * label). Then the eval images (CTXCONV_INPUT_BYTES each).
 * Output file: per trained block, per step: float32 loss, uint32 correct, uint32 rescaled,
 * ticks of the frozen prefix and of the training step (uint32 x 2 each); then its state
 * (conv weights OHWI, conv_s, conv_b, head weights, head_s, head_b) and its inference
 * parameters (conv bias, mult, shift; head bias, mult, shift). Then per eval image its
 * CTXCONV_NUM_CLASSES int32 class scores (ctxconv_classify: the trained weights), the
 * calibration ticks (uint32 x 2) and the stack high-water mark in bytes. */
#include <stdint.h>
#include <string.h>

#include "ctxconv_model.h"
#include "ctxconv_train.h"
#include "platform.h"

static uint8_t pixels[CTXCONV_INPUT_BYTES];

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

static void fail(const char *what)
{
    platform_log(what);
    platform_exit(2);
}

static void put_ticks(uint64_t t)
{
    const uint32_t w[2] = {(uint32_t)t, (uint32_t)(t >> 32)};
    put(w, sizeof w);
}

static void put_state(const ctxconv_train_block *b)
{
    const int32_t taps = b->kernel * b->kernel * b->in_channels;
    const int32_t n_flat = b->grid * b->grid * b->filters;
    for (int32_t o = 0; o < b->filters; ++o) {
        for (int32_t t = 0; t < taps; ++t) {
            const int8_t w = ctxconv_train_conv_weight(b, o, t);
            put(&w, 1);
        }
    }
    put(b->conv_s, 4 * b->filters);
    put(b->conv_b, 4 * b->filters);
    put(b->head_weights, b->classes * n_flat);
    put(b->head_s, 4 * b->classes);
    put(b->head_b, 4 * b->classes);
    put(b->conv_bias, 4 * b->filters);
    put(b->conv_mult, 4 * b->filters);
    put(b->conv_shift, 4 * b->filters);
    put(b->head_bias, 4 * b->classes);
    put(b->head_mult, 4 * b->classes);
    put(b->head_shift, 4 * b->classes);
}

/* one labelled sample: returns the feed's code; adds the prefix's ticks to *prefix */
static int32_t feed(int32_t block, int32_t use_feed, int32_t label, uint64_t *prefix)
{
    if (use_feed) {
        return ctxconv_train_feed(pixels, label);
    }
    const uint64_t t0 = platform_ticks();
    ctxconv_quantize_image(pixels, ctxconv_input_buffer());
    const int8_t *x = ctxconv_input_buffer();
    for (int32_t i = 0; i < block; ++i) {
        ctxconv_run_features(i);
        x = ctxconv_block_features(i);
    }
    __asm__ volatile("" ::: "memory");
    *prefix += platform_ticks() - t0;
    return ctxconv_train_feed_input(x, label);
}

static void train_block(int32_t use_feed)
{
    int32_t h[6];
    uint32_t seeds[2];
    float lr;
    get(h, sizeof h);
    get(seeds, sizeof seeds);
    get(&lr, sizeof lr);
    const ctxconv_train_config cfg = {.block = h[0], .update = h[1], .lr = lr, .batch = h[2],
                                      .seed = seeds[0], .stochastic = h[3]};
    if (h[4] && ctxconv_train_reinit(h[0], seeds[1]) != CTXCONV_TRAIN_OK) {
        fail("error: ctxconv_train_reinit refused the block\n");
    }
    if (ctxconv_train_configure(&cfg) != CTXCONV_TRAIN_OK) {
        fail("error: ctxconv_train_configure refused the configuration\n");
    }
    for (int32_t s = 0; s < h[5]; ++s) {
        uint64_t prefix = 0, stepped = 0;
        const ctxconv_train_counters before = ctxconv_train_get_counters();
        platform_marker("train step", &s, 1);
        for (int32_t r = 0; r < cfg.batch; ++r) {
            uint8_t label;
            get(pixels, sizeof pixels);
            get(&label, 1);
            const uint64_t t0 = platform_ticks();
            uint64_t p = 0;
            const int32_t rc = feed(cfg.block, use_feed, label, &p);
            __asm__ volatile("" ::: "memory");
            const uint64_t t1 = platform_ticks();
            prefix += p;
            if (rc < 0) {
                fail("error: ctxconv_train_feed failed (diverged or a bad label)\n");
            }
            if (rc == CTXCONV_TRAIN_STEPPED) {
                stepped = t1 - t0 - p; /* keeping the last sample and the step */
            }
        }
        const ctxconv_train_counters c = ctxconv_train_get_counters();
        if (c.steps != before.steps + 1) {
            fail("error: a full batch did not run a step\n");
        }
        const uint32_t correct = c.correct - before.correct;
        const uint32_t rescaled = c.rescaled - before.rescaled;
        put(&c.last_loss, 4);
        put(&correct, 4);
        put(&rescaled, 4);
        put_ticks(prefix);
        put_ticks(stepped);
    }
    put_state(ctxconv_train_blocks[cfg.block]);
}

int main(int argc, char **argv)
{
    const char *in_path = argc > 2 ? argv[1] : "inputs.bin";
    const char *out_path = argc > 2 ? argv[2] : "outputs.bin";
    int32_t h[3];
    platform_init();
    if (platform_open(in_path, out_path)) {
        fail("error: cannot open the input or output file\n");
    }
    get(h, sizeof h);
    for (int32_t i = 0; i < h[0]; ++i) {
        train_block(h[2]);
    }
    for (int32_t i = 0; i < h[1]; ++i) {
        int32_t scores[CTXCONV_NUM_CLASSES];
        get(pixels, sizeof pixels);
        ctxconv_quantize_image(pixels, ctxconv_input_buffer());
        ctxconv_classify(ctxconv_input_buffer(), scores);
        put(scores, sizeof scores);
    }
    platform_finish();
    return 0;
}
