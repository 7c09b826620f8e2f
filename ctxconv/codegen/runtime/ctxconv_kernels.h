/* ctxconv int8 kernels: bit-exact with TensorFlow Lite Micro's int8 reference kernels.
 *
 * Activations are NHWC int8 with per-tensor (scale, zero point); conv and fully connected
 * weights are int8 with per-output-channel requantization (multiplier, shift), computed by
 * the generator with TFLite's QuantizeMultiplier. Requantization is TFLM's double rounding
 * (SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT). Integer arithmetic only.
 *
 * On cores with the DSP extension (__ARM_FEATURE_DSP: Cortex-M4, M7, M33) the conv and
 * fully connected inner loops use the dual 16-bit multiply-accumulate SMLAD (the conv's in
 * GNU inline assembly in optimized builds: LDRD of two channels' weights and of each
 * pixel's column, 2 channels x 2 pixels, four groups of 4 k per loop pass, about one
 * instruction per MAC; define CTXCONV_NO_ASM for the C intrinsics loop), max pooling
 * compares four channels per SSUB8/SEL and average pooling sums four per SXTAB16; elsewhere a
 * plain C loop computes the same integers (on ARMv6-M, Cortex-M0/M0+, the conv takes one
 * accumulator per pass, which its 8 low registers hold without spilling; elsewhere all
 * four of a channel pair and pixel pair at once).
 */
#ifndef CTXCONV_KERNELS_H
#define CTXCONV_KERNELS_H

#include <stdint.h>

/* Word alignment for the generated int8 weight arrays: the Arm conv loop reads them with
 * LDRD (and checks, falling back to unaligned loads where a compiler ignores this). */
#if defined(__GNUC__) || defined(__clang__)
#define CTXCONV_ALIGN4 __attribute__((aligned(4)))
#else
#define CTXCONV_ALIGN4
#endif

/* CONV_2D with per-channel requantization. The generator pads k_h * k_w * in_c up to
 * k_padded (a multiple of 4) and interleaves the rows of output channels 2i and 2i + 1 in
 * groups of 4 weights (8 bytes per group; an odd last channel's row stays alone), so one
 * pass over the im2col columns of two pixels feeds four accumulators. Channel c's data
 * starts at byte (c & ~1) * k_padded either way. */
typedef struct {
    int32_t in_h, in_w, in_c;
    int32_t out_h, out_w, out_c;
    int32_t k_h, k_w, stride_h, stride_w, pad_top, pad_left;
    int32_t k_padded;
    int32_t in_offset;  /* minus the input zero point */
    int32_t out_offset; /* the output zero point */
    int32_t act_min, act_max;
    const int8_t *weights;  /* out_c x k_padded */
    const int32_t *bias;    /* out_c */
    const int32_t *mult;    /* out_c */
    const int32_t *shift;   /* out_c */
} ctxconv_conv_params;

/* FULLY_CONNECTED: y = W x + b with W (out_n, in_n) in natural order. The generator folds
 * the input offset into the bias (bias + in_offset * sum(W row)), so the inner loop is a
 * plain int8 dot product. */
typedef struct {
    int32_t in_n, out_n;
    int32_t out_offset;
    int32_t act_min, act_max;
    const int8_t *weights; /* out_n x in_n */
    const int32_t *bias;   /* out_n, input offset folded in */
    const int32_t *mult;   /* out_n */
    const int32_t *shift;  /* out_n */
} ctxconv_fc_params;

/* MAX_POOL_2D / AVERAGE_POOL_2D: input and output share their quantization. */
typedef struct {
    int32_t in_h, in_w, channels, out_h, out_w;
    int32_t f_h, f_w, stride_h, stride_w, pad_top, pad_left;
    int32_t act_min, act_max;
} ctxconv_pool_params;

/* ADD of a (n elements) and b (b_n elements, repeated along a: b_n divides n). */
typedef struct {
    int32_t n, b_n;
    int32_t a_offset, b_offset, out_offset;
    int32_t left_shift;
    int32_t a_mult, a_shift, b_mult, b_shift, out_mult, out_shift;
    int32_t act_min, act_max;
} ctxconv_add_params;

/* MUL of a (n elements) and b (b_n elements, repeated along a: b_n divides n), as TFLite's
 * int8 Mul: (a - za)(b - zb) requantized by QuantizeMultiplier(sa * sb / so). */
typedef struct {
    int32_t n, b_n;
    int32_t a_offset, b_offset, out_offset;
    int32_t mult, shift;
    int32_t act_min, act_max;
} ctxconv_mul_params;

/* MEAN over the last `count` elements of each of `outer` rows (keep_dims or not, the bytes
 * are the same), as TFLite's QuantizedMeanOrSum: the int32 sum minus the input zero point
 * times count, requantized by the input/output multiplier folded with 1/count. */
typedef struct {
    int32_t outer, count;
    int32_t zp_times_count; /* input zero point * count, wrapped to int32 */
    int32_t out_offset;
    int32_t mult, shift;
} ctxconv_mean_params;

/* L2_NORMALIZATION over the last axis (`depth` elements per row), as TFLite's int8
 * L2Normalization: output scale 1/128, zero point 0. */
typedef struct {
    int32_t outer, depth;
    int32_t in_offset; /* minus the input zero point */
} ctxconv_l2norm_params;

/* TFLite MultiplyByQuantizedMultiplier (double rounding). */
int32_t ctxconv_requantize(int32_t x, int32_t mult, int32_t shift);

/* col: scratch of 2 * k_padded int16 (the im2col columns of two output pixels, interleaved
 * in groups of 4). */
void ctxconv_conv_s8(const ctxconv_conv_params *p, const int8_t *in, int8_t *out, int16_t *col);
void ctxconv_fc_s8(const ctxconv_fc_params *p, const int8_t *in, int8_t *out);
/* Pools may run in place (out == in) with VALID padding. */
void ctxconv_max_pool_s8(const ctxconv_pool_params *p, const int8_t *in, int8_t *out);
void ctxconv_avg_pool_s8(const ctxconv_pool_params *p, const int8_t *in, int8_t *out);
/* May run in place (out == a). */
void ctxconv_add_s8(const ctxconv_add_params *p, const int8_t *a, const int8_t *b, int8_t *out);
/* May run in place (out == a). */
void ctxconv_mul_s8(const ctxconv_mul_params *p, const int8_t *a, const int8_t *b, int8_t *out);
void ctxconv_mean_s8(const ctxconv_mean_params *p, const int8_t *in, int8_t *out);
/* May run in place (out == in). */
void ctxconv_l2norm_s8(const ctxconv_l2norm_params *p, const int8_t *in, int8_t *out);

#endif /* CTXCONV_KERNELS_H */
