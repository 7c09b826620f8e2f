/* One in-place training step of one context-free block with int8 weights (the C side of
 * ctxconv/ondevice/qas.py, operation for operation: build with
 * -ffp-contract=off so that no multiply-add is fused).
 *
 * The block's geometry comes from compile-time macros (CT_IN_SIZE, CT_IN_CHANNELS, CT_POOL,
 * CT_KERNEL, CT_FILTERS, CT_CLASSES, CT_GRID, CT_BATCH); every buffer is static. */
#ifndef CTXCONV_TRAIN_H
#define CTXCONV_TRAIN_H

#include <stdint.h>

#define CT_OUT_SIZE (CT_IN_SIZE / CT_POOL)
#define CT_PIXELS (CT_OUT_SIZE * CT_OUT_SIZE)
#define CT_TAPS (CT_KERNEL * CT_KERNEL * CT_IN_CHANNELS)
#define CT_CELL (CT_OUT_SIZE / CT_GRID)
#define CT_NFLAT (CT_GRID * CT_GRID * CT_FILTERS)
#define CT_IN_BYTES (CT_IN_SIZE * CT_IN_SIZE * CT_IN_CHANNELS)
#define CT_POOLED_BYTES (CT_PIXELS * CT_IN_CHANNELS)

/* the block's trained state (int8 weights in SRAM, float32 scales and biases) */
extern int8_t ct_conv_q[CT_FILTERS * CT_TAPS];
extern float ct_conv_s[CT_FILTERS], ct_conv_b[CT_FILTERS];
extern int8_t ct_head_q[CT_CLASSES * CT_NFLAT];
extern float ct_head_s[CT_CLASSES], ct_head_b[CT_CLASSES];
extern float ct_in_scale;
extern int32_t ct_in_zero_point;

/* Store image r (0 <= r < CT_BATCH) of the batch: its int8 block input (CT_IN_BYTES),
 * max-pooled into the kept batch. */
void ct_set_input(int32_t r, const int8_t *x);

typedef struct {
    float loss;
    int32_t correct;  /* images whose true class has the highest score */
    int32_t rescaled; /* channels / class rows whose scale grew */
} ct_step_result;

/* One step on the first `batch` stored images with their labels. stochastic: 1 = round
 * with the counter-based hash of (seed, step), 0 = to nearest. */
ct_step_result ct_train_step(const uint8_t *labels, int32_t batch, float lr, uint32_t step,
                             uint32_t seed, int32_t stochastic);

#endif
