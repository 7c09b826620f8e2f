/* One in-place training step of one context-free block with int8 weights (the C side of
 * ctxconv/ondevice/qas.py, operation for operation: build with
 * -ffp-contract=off so that no multiply-add is fused).
 *
 * The block's geometry comes from compile-time macros (CTXCONV_TRAIN_IN_SIZE,
 * CTXCONV_TRAIN_IN_CHANNELS, CTXCONV_TRAIN_POOL, CTXCONV_TRAIN_KERNEL, CTXCONV_TRAIN_FILTERS,
 * CTXCONV_TRAIN_CLASSES, CTXCONV_TRAIN_GRID, CTXCONV_TRAIN_BATCH); every buffer is static.
 * Not yet written into an export's c/ folder: the geometry is still given by the build. */
#ifndef CTXCONV_TRAIN_H
#define CTXCONV_TRAIN_H

#include <stdint.h>

#define CTXCONV_TRAIN_OUT_SIZE (CTXCONV_TRAIN_IN_SIZE / CTXCONV_TRAIN_POOL)
#define CTXCONV_TRAIN_PIXELS (CTXCONV_TRAIN_OUT_SIZE * CTXCONV_TRAIN_OUT_SIZE)
#define CTXCONV_TRAIN_TAPS \
    (CTXCONV_TRAIN_KERNEL * CTXCONV_TRAIN_KERNEL * CTXCONV_TRAIN_IN_CHANNELS)
#define CTXCONV_TRAIN_CELL (CTXCONV_TRAIN_OUT_SIZE / CTXCONV_TRAIN_GRID)
#define CTXCONV_TRAIN_NFLAT (CTXCONV_TRAIN_GRID * CTXCONV_TRAIN_GRID * CTXCONV_TRAIN_FILTERS)
#define CTXCONV_TRAIN_IN_BYTES \
    (CTXCONV_TRAIN_IN_SIZE * CTXCONV_TRAIN_IN_SIZE * CTXCONV_TRAIN_IN_CHANNELS)
#define CTXCONV_TRAIN_POOLED_BYTES (CTXCONV_TRAIN_PIXELS * CTXCONV_TRAIN_IN_CHANNELS)

/* the block's trained state (int8 weights in SRAM, float32 scales and biases) */
extern int8_t ctxconv_train_conv_q[CTXCONV_TRAIN_FILTERS * CTXCONV_TRAIN_TAPS];
extern float ctxconv_train_conv_s[CTXCONV_TRAIN_FILTERS];
extern float ctxconv_train_conv_b[CTXCONV_TRAIN_FILTERS];
extern int8_t ctxconv_train_head_q[CTXCONV_TRAIN_CLASSES * CTXCONV_TRAIN_NFLAT];
extern float ctxconv_train_head_s[CTXCONV_TRAIN_CLASSES];
extern float ctxconv_train_head_b[CTXCONV_TRAIN_CLASSES];
extern float ctxconv_train_in_scale;
extern int32_t ctxconv_train_in_zero_point;

/* Store image r (0 <= r < CTXCONV_TRAIN_BATCH) of the batch: its int8 block input
 * (CTXCONV_TRAIN_IN_BYTES), max-pooled into the kept batch. */
void ctxconv_train_set_input(int32_t r, const int8_t *x);

typedef struct {
    float loss;
    int32_t correct;  /* images whose true class has the highest score */
    int32_t rescaled; /* channels / class rows whose scale grew */
} ctxconv_train_step_result;

/* One step on the first `batch` stored images with their labels. stochastic: 1 = round
 * with the counter-based hash of (seed, step), 0 = to nearest. */
ctxconv_train_step_result ctxconv_train_step(const uint8_t *labels, int32_t batch, float lr,
                                             uint32_t step, uint32_t seed, int32_t stochastic);

#endif
