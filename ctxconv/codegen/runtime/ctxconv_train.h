/* SPDX-License-Identifier: Apache-2.0 */
/* ctxconv on-device training: forward-only, block-wise learning in the library itself.
 *
 * A block learns on its own (the blocks before it stay frozen), with the memory of one
 * block: its int8 weights are updated in place (no float copy, no gradient buffer beyond
 * one channel's), with one float32 scale per output channel / class and float32 biases.
 * The objective is the softmax cross-entropy over the block's K class scores; the update
 * is plain SGD with quantization-aware scaling and stochastic rounding (the numpy model of
 * the same step is ctxconv/ondevice/qas.py; both give the same int8 weights bit for bit).
 * After every step the block's inference parameters (int32 biases, requantization
 * multipliers and shifts) are recomputed, so ctxconv_classify infers with the new weights
 * at once.
 *
 * Build: define CTXCONV_TRAIN_BLOCKS as the bit mask of the blocks that learn (bit i =
 * block i; CTXCONV_TRAINABLE_BLOCKS in ctxconv_model.h lists the blocks this library can
 * train). Those blocks' weights and parameters then live in RAM; the others stay const in
 * flash. Compile this file with -ffp-contract=off (no fused multiply-add) to keep the
 * float32 steps identical to the host's. CTXCONV_TRAIN_MAX_BATCH (default 8) sizes the
 * kept batch. Every buffer is static; no malloc.
 *
 * Use (one sample at a time, e.g. as labelled samples arrive):
 *     ctxconv_train_config cfg = {.block = 0, .update = CTXCONV_UPDATE_ALL, .lr = 0.05f,
 *                                 .batch = 8, .seed = 1, .stochastic = 1};
 *     ctxconv_train_configure(&cfg);
 *     ctxconv_train_feed(pixels, label);   (a step runs when the batch is full)
 *     ctxconv_train_get_counters();        (steps, running loss and accuracy)
 *     ctxconv_classify(...);               (infers with the updated weights)
 * Not reentrant: one training at a time, not concurrently with inference. */
#ifndef CTXCONV_TRAIN_H
#define CTXCONV_TRAIN_H

#include <stdint.h>

#include "ctxconv_model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes (0 or positive: success). */
#define CTXCONV_TRAIN_OK 0
#define CTXCONV_TRAIN_STEPPED 1        /* ctxconv_train_feed: the batch was full, a step ran */
#define CTXCONV_TRAIN_E_BLOCK (-1)     /* the block is not built trainable (CTXCONV_TRAIN_BLOCKS) */
#define CTXCONV_TRAIN_E_CONFIG (-2)    /* update, batch, lr or rounding out of range */
#define CTXCONV_TRAIN_E_LABEL (-3)     /* label outside [0, CTXCONV_NUM_CLASSES) */
#define CTXCONV_TRAIN_E_STATE (-4)     /* ctxconv_train_configure has not succeeded */
#define CTXCONV_TRAIN_E_DIVERGED (-5)  /* the loss is not finite: lower the learning rate */

/* What a step updates. */
#define CTXCONV_UPDATE_ALL 0  /* every conv and head weight and bias */
#define CTXCONV_UPDATE_HEAD 1 /* the head's weights and biases (the conv stays as it is) */
#define CTXCONV_UPDATE_BIAS 2 /* the conv and head biases only */

typedef struct {
    int32_t block;      /* the block that learns; the blocks before it run frozen */
    int32_t update;     /* CTXCONV_UPDATE_* */
    float lr;           /* learning rate, > 0 */
    int32_t batch;      /* samples per step, 1..CTXCONV_TRAIN_MAX_BATCH */
    uint32_t seed;      /* stochastic rounding draws hash(seed, step, parameter) */
    int32_t stochastic; /* 1: stochastic rounding; 0: round to nearest */
} ctxconv_train_config;

typedef struct {
    uint32_t steps;     /* steps since ctxconv_train_configure */
    uint32_t samples;   /* samples fed since then (those of a partial batch included) */
    uint32_t correct;   /* samples of the steps whose true class scored highest before the step */
    uint32_t rescaled;  /* weight rows whose scale grew to hold an update */
    float last_loss;    /* mean loss of the last step's batch */
    float loss_sum;     /* sum of the steps' mean losses (running mean: loss_sum / steps) */
} ctxconv_train_counters;

/* One block's training view of the library: geometry, the quantization it keeps, the
 * inference parameters a step rewrites (RAM when built trainable) and the float32 state.
 * Generated into ctxconv_model.c; NULL for a block not built trainable. */
typedef struct {
    int32_t in_size, in_channels, pool, kernel, filters, classes, grid, k_padded;
    float in_scale;        /* the block input's scale; its zero point: */
    int32_t in_zero_point;
    float out_scale;       /* the conv output's (features) scale */
    float grid_scale;      /* the head input's scale; its zero point: */
    int32_t grid_zero_point;
    float score_scale;     /* the class scores' scale */
    int8_t *conv_weights;  /* the conv kernel's layout (ctxconv_kernels.h) */
    int32_t *conv_bias, *conv_mult, *conv_shift;
    int8_t *head_weights;  /* (classes, grid * grid * filters), NHWC flatten order */
    int32_t *head_bias, *head_mult, *head_shift;
    float *conv_s, *conv_b, *head_s, *head_b;
} ctxconv_train_block;

extern const ctxconv_train_block *const ctxconv_train_blocks[CTXCONV_NUM_BLOCKS];

/* Start training cfg->block: checks the configuration, clears the counters and the kept
 * batch. Returns CTXCONV_TRAIN_OK or an error code. */
int32_t ctxconv_train_configure(const ctxconv_train_config *cfg);

/* Give `block` fresh weights (seeded uniform init with torch's default bounds, quantized
 * per channel), to learn from scratch; its inference parameters follow. */
int32_t ctxconv_train_reinit(int32_t block, uint32_t seed);

/* Feed one labelled raw image (CTXCONV_INPUT_BYTES uint8, NHWC): the frozen blocks run,
 * the trained block's input is kept; when the batch is full a step runs. Uses the
 * inference arena (ctxconv_input_buffer is overwritten). Returns CTXCONV_TRAIN_STEPPED,
 * CTXCONV_TRAIN_OK (kept) or an error code. */
int32_t ctxconv_train_feed(const uint8_t *pixels, int32_t label);

/* The same with the trained block's int8 input given directly (its input shape). */
int32_t ctxconv_train_feed_input(const int8_t *block_input, int32_t label);

ctxconv_train_counters ctxconv_train_get_counters(void);

/* Conv weight t (OHWI order within the row) of output channel o of a block. */
int8_t ctxconv_train_conv_weight(const ctxconv_train_block *b, int32_t o, int32_t t);

#ifdef __cplusplus
}
#endif

#endif
