/* ctxconv int8 kernels: see ctxconv_kernels.h. C99, no allocation, no floating point. */
#include "ctxconv_kernels.h"

#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP && !defined(CTXCONV_NO_DSP)
#include <arm_acle.h>
#define CTXCONV_DSP 1
#else
#define CTXCONV_DSP 0
#endif

/* The conv's inner loop in GNU inline assembly (LDRD post-increment, which C cannot ask
 * for without type punning): needs the frame pointer free, so optimized builds only;
 * -DCTXCONV_NO_ASM keeps the C intrinsics loop. */
#if CTXCONV_DSP && defined(__GNUC__) && defined(__OPTIMIZE__) && !defined(CTXCONV_NO_ASM)
#define CTXCONV_ASM 1
#else
#define CTXCONV_ASM 0
#endif

/* ------------------------------------------------------------------ requantization */

/* gemmlowp SaturatingRoundingDoublingHighMul: for int32 operands the reference's
 * sign-dependent nudge equals the floor of (a * b + 2^30) / 2^31. */
static inline int32_t srdhm(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/* gemmlowp RoundingDivideByPOT: x / 2^e rounded half away from zero. */
static inline int32_t rdbpot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << e) - 1u); /* 0 <= e <= 31 */
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> e) + (remainder > threshold ? 1 : 0);
}

static inline int32_t requantize(int32_t x, int32_t mult, int32_t shift)
{
    const int32_t left = shift > 0 ? shift : 0;
    const int32_t right = shift > 0 ? 0 : -shift;
    /* x * 2^left in int32 with two's-complement wrap, as on the device */
    const int32_t shifted = (int32_t)((uint32_t)x << left);
    return rdbpot(srdhm(shifted, mult), right);
}

int32_t ctxconv_requantize(int32_t x, int32_t mult, int32_t shift)
{
    return requantize(x, mult, shift);
}

static inline int8_t clamp_s8(int32_t v, int32_t lo, int32_t hi)
{
    return (int8_t)(v < lo ? lo : (v > hi ? hi : v));
}

/* ------------------------------------------------------------------ packed loads */

static inline uint32_t load_u32(const void *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof v); /* one LDR on cores with unaligned access */
    return v;
}

#if CTXCONV_DSP
/* The ACLE intrinsics on the packed words as uint32_t (their arguments are signed types:
 * the casts only reinterpret the bits). */
static inline uint32_t sxtb16(uint32_t x)
{
    return (uint32_t)__sxtb16((int32_t)x);
}

static inline uint32_t sxtab16(uint32_t acc, uint32_t x)
{
    return (uint32_t)__sxtab16((int32_t)acc, (int32_t)x);
}

static inline int32_t smlad(uint32_t x, uint32_t y, int32_t acc)
{
    return (int32_t)__smlad((int32_t)x, (int32_t)y, acc);
}

static inline uint32_t sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}
#endif

/* ------------------------------------------------------------------ conv */

/* Layouts (ctxconv_kernels.h): k runs in groups of 4. Weights: a pair of output channels
 * stores its two rows interleaved group by group (8 bytes per group), an odd last channel
 * its row alone (4 bytes per group), each group in natural order w0 w1 w2 w3; SXTB16 makes
 * the pairs (w0, w2) and (w1, w3) of them. The scratch holds the im2col columns of two
 * output pixels interleaved the same way, per group x0[4] then x1[4], each as the int16
 * (x - zero point) of inputs k0 k2 k1 k3 to match. */

static const int8_t group_slot[4] = {0, 2, 1, 3};

#if CTXCONV_DSP
static inline uint32_t sxtab16_ror8(uint32_t acc, uint32_t x)
{
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(acc), "r"(x));
    return r;
}
#endif

/* Four input bytes (+ offset) into one group of a column: slots k0 k2 k1 k3. */
static inline void put_group(int16_t *d, const int8_t *s, int16_t off)
{
#if CTXCONV_DSP
    const uint32_t offs = (uint32_t)(uint16_t)off * 0x10001u;
    const uint32_t v = load_u32(s);
    const uint32_t pair[2] = {sxtab16(offs, v), sxtab16_ror8(offs, v)};
    memcpy(d, pair, sizeof pair);
#else
    d[0] = (int16_t)(s[0] + off);
    d[1] = (int16_t)(s[2] + off);
    d[2] = (int16_t)(s[1] + off);
    d[3] = (int16_t)(s[3] + off);
#endif
}

/* Write output pixel (oy, ox)'s receptive field as int16 (x - zero point) into column
 * `which` (0 or 1) of the interleaved scratch; zero for padded taps and the k tail. */
static void im2col(const ctxconv_conv_params *p, const int8_t *in, int32_t oy, int32_t ox,
                   int16_t *col, int32_t which)
{
    const int32_t iy0 = oy * p->stride_h - p->pad_top;
    const int32_t ix0 = ox * p->stride_w - p->pad_left;
    const int32_t cin = p->in_c;
    const int16_t off = (int16_t)p->in_offset;
    int16_t *base = col + which * 4;
    int32_t k = 0; /* position in the column */
    for (int32_t ky = 0; ky < p->k_h; ++ky) {
        const int32_t iy = iy0 + ky;
        for (int32_t kx = 0; kx < p->k_w; ++kx) {
            const int32_t ix = ix0 + kx;
            const int inside = iy >= 0 && iy < p->in_h && ix >= 0 && ix < p->in_w;
            const int8_t *s = in + (iy * p->in_w + ix) * cin;
            if ((cin & 3) == 0) { /* whole groups: 4 channels at a time */
                int16_t *d = base + (k >> 2) * 8;
                k += cin;
                if (!inside) {
                    for (int32_t c = 0; c < cin; c += 4, d += 8) {
                        memset(d, 0, 4 * sizeof *d);
                    }
                    continue;
                }
                for (int32_t c = 0; c < cin; c += 4, d += 8) {
                    put_group(d, s + c, off);
                }
                continue;
            }
            for (int32_t c = 0; c < cin; ++c, ++k) {
                base[(k >> 2) * 8 + group_slot[k & 3]] = inside ? (int16_t)(s[c] + off) : 0;
            }
        }
    }
    for (; k < p->k_padded; ++k) {
        base[(k >> 2) * 8 + group_slot[k & 3]] = 0;
    }
}

/* One weight row (groups of 4 every `stride` bytes) with one column (groups every 8 int16,
 * starting at x). */
static int32_t dot_row_col(const int8_t *w, int32_t stride, const int16_t *x, int32_t groups,
                           int32_t acc)
{
    for (int32_t g = 0; g < groups; ++g, w += stride, x += 8) {
#if CTXCONV_DSP
        const uint32_t wv = load_u32(w);
        acc = smlad(sxtb16(wv), load_u32(x), acc);
        acc = smlad(sxtb16_ror8(wv), load_u32(x + 2), acc);
#else
        acc += w[0] * x[0] + w[2] * x[1] + w[1] * x[2] + w[3] * x[3]; /* x: k0 k2 k1 k3 */
#endif
    }
    return acc;
}

#if CTXCONV_ASM
/* One group (4 k) of channels c, c + 1 x pixel 0: LDRD of both channels' weights and of
 * the pixel's 4 int16 (x then advances by `xstep` bytes), 4 SXTB16, 4 SMLAD. */
#define CTXCONV_GROUP_PX0(xstep)                 \
    "ldrd %[wa], %[wb], [%[w]], #8\n\t"         \
    "ldrd %[xa], %[xb], [%[x]], #" xstep "\n\t" \
    "sxtb16 %[t], %[wa]\n\t"                    \
    "sxtb16 %[wa], %[wa], ror #8\n\t"           \
    "smlad %[a00], %[t], %[xa], %[a00]\n\t"     \
    "smlad %[a00], %[wa], %[xb], %[a00]\n\t"    \
    "sxtb16 %[u], %[wb]\n\t"                    \
    "sxtb16 %[wb], %[wb], ror #8\n\t"           \
    "smlad %[a10], %[u], %[xa], %[a10]\n\t"     \
    "smlad %[a10], %[wb], %[xb], %[a10]\n\t"

/* One group of channels c, c + 1 x pixels 0, 1 (3 LDRD, 4 SXTB16, 8 SMLAD): pixel 1's
 * column follows pixel 0's in the group and reuses the unpacked weights. */
#define CTXCONV_GROUP_2X2                        \
    CTXCONV_GROUP_PX0("8")                       \
    "ldrd %[xa], %[xb], [%[x]], #8\n\t"         \
    "smlad %[a01], %[t], %[xa], %[a01]\n\t"     \
    "smlad %[a01], %[wa], %[xb], %[a01]\n\t"    \
    "smlad %[a11], %[u], %[xa], %[a11]\n\t"     \
    "smlad %[a11], %[wb], %[xb], %[a11]\n\t"

#define CTXCONV_GROUP_OPERANDS                                                       \
    [a00] "+r"(a[0]), [a01] "+r"(a[1]), [a10] "+r"(a[2]), [a11] "+r"(a[3]),         \
    [w] "+r"(w), [x] "+r"(x), [wa] "=&r"(wa), [wb] "=&r"(wb), [xa] "=&r"(xa),      \
    [xb] "=&r"(xb), [t] "=&r"(t), [u] "=&r"(u)

/* One group of pixel 0 alone: skips pixel 1's column. */
#define CTXCONV_GROUP_2X1 CTXCONV_GROUP_PX0("16")

/* a[] = (c px0, c px1, c+1 px0, c+1 px1) += `groups` groups; w and x word-aligned (LDRD):
 * four groups per loop pass, 60 instructions + 2 for the loop per 64 MACs; the groups & 3
 * before it without a loop. */
static inline void mac_2x2(const int8_t *w, const int16_t *x, int32_t groups, int32_t a[4])
{
    uint32_t wa, wb, xa, xb, t, u;
    int32_t quads = groups >> 2;
    if (groups & 1) {
        __asm__(CTXCONV_GROUP_2X2 : CTXCONV_GROUP_OPERANDS : : "memory");
    }
    if (groups & 2) {
        __asm__(CTXCONV_GROUP_2X2 CTXCONV_GROUP_2X2 : CTXCONV_GROUP_OPERANDS : : "memory");
    }
    if (quads) {
        __asm__("1:\n\t" CTXCONV_GROUP_2X2 CTXCONV_GROUP_2X2 CTXCONV_GROUP_2X2 CTXCONV_GROUP_2X2
                "subs %[n], %[n], #1\n\t"
                "bne 1b\n\t"
                : CTXCONV_GROUP_OPERANDS, [n] "+r"(quads)
                :
                : "cc", "memory");
    }
}

/* a[0] (channel c) and a[2] (c + 1) += `groups` groups of pixel 0 of the scratch. */
static inline void mac_2x1(const int8_t *w, const int16_t *x, int32_t groups, int32_t a[4])
{
    uint32_t wa, wb, xa, xb, t, u;
    for (int32_t g = groups; g > 0; --g) {
        __asm__(CTXCONV_GROUP_2X1
                : [a00] "+r"(a[0]), [a10] "+r"(a[2]), [w] "+r"(w), [x] "+r"(x), [wa] "=&r"(wa),
                  [wb] "=&r"(wb), [xa] "=&r"(xa), [xb] "=&r"(xb), [t] "=&r"(t), [u] "=&r"(u)
                :
                : "memory");
    }
}
#endif

/* Output parameters in locals: int8 stores may alias anything, so fields read through the
 * params pointer would be reloaded after every store. */
typedef struct {
    const int32_t *mult, *shift;
    int32_t offset, lo, hi;
} out_quant;

/* requantize() for a multiplier m >= 0, as every one the generator writes (QuantizeMultiplier:
 * [2^30, 2^31) or 0): SaturatingRoundingDoublingHighMul's one saturating case,
 * INT32_MIN * INT32_MIN, cannot occur, so it is not tested per output. */
static inline int8_t out_s8(const out_quant *q, int32_t acc, int32_t m, int32_t s)
{
    const int32_t left = s > 0 ? s : 0;
    const int32_t shifted = (int32_t)((uint32_t)acc << left);
    const int32_t high = (int32_t)(((int64_t)shifted * m + ((int64_t)1 << 30)) >> 31);
    return clamp_s8(rdbpot(high, left - s) + q->offset, q->lo, q->hi);
}

static inline int8_t channel_out(const out_quant *q, int32_t acc, int32_t ch)
{
    return out_s8(q, acc, q->mult[ch], q->shift[ch]);
}

/* Output pixels 0 and (when two) 1 of the scratch, all channels, two channels at a time. */
static void conv_pixels(const ctxconv_conv_params *p, const int16_t *col, int32_t pixels,
                        int8_t *out)
{
    const int32_t kp = p->k_padded, groups = kp >> 2, cout = p->out_c;
    const out_quant q = {p->mult, p->shift, p->out_offset, p->act_min, p->act_max};
    const int8_t *weights = p->weights;
    const int32_t *bias = p->bias;
#if CTXCONV_ASM
    const int aligned = (((uintptr_t)weights | (uintptr_t)col) & 3u) == 0u;
#endif
    int32_t ch = 0;
    for (; ch + 1 < cout && pixels == 2; ch += 2) {
        const int8_t *w = weights + ch * kp;
        int32_t a00 = bias[ch], a01 = a00, a10 = bias[ch + 1], a11 = a10;
#if CTXCONV_ASM
        if (aligned) {
            int32_t a[4] = {a00, a01, a10, a11};
            mac_2x2(w, col, groups, a);
            a00 = a[0];
            a01 = a[1];
            a10 = a[2];
            a11 = a[3];
        } else
#endif
        {
#if CTXCONV_DSP
        const int16_t *x = col;
        for (int32_t g = groups; g > 0; --g, w += 8, x += 8) {
            const uint32_t x0l = load_u32(x), x0h = load_u32(x + 2);
            const uint32_t x1l = load_u32(x + 4), x1h = load_u32(x + 6);
            uint32_t wv = load_u32(w);
            uint32_t wl = sxtb16(wv), wh = sxtb16_ror8(wv);
            a00 = smlad(wl, x0l, a00);
            a00 = smlad(wh, x0h, a00);
            a01 = smlad(wl, x1l, a01);
            a01 = smlad(wh, x1h, a01);
            wv = load_u32(w + 4);
            wl = sxtb16(wv);
            wh = sxtb16_ror8(wv);
            a10 = smlad(wl, x0l, a10);
            a10 = smlad(wh, x0h, a10);
            a11 = smlad(wl, x1l, a11);
            a11 = smlad(wh, x1h, a11);
        }
#elif defined(__ARM_ARCH_6M__)
        /* ARMv6-M (Cortex-M0/M0+): 8 low registers; one accumulator per pass spills least */
        a00 = dot_row_col(w, 8, col, groups, a00);
        a01 = dot_row_col(w, 8, col + 4, groups, a01);
        a10 = dot_row_col(w + 4, 8, col, groups, a10);
        a11 = dot_row_col(w + 4, 8, col + 4, groups, a11);
#else
        /* both channels x both pixels per group: each weight and column value loaded once */
        const int16_t *x = col;
        for (int32_t g = groups; g > 0; --g, w += 8, x += 8) {
            const int32_t x00 = x[0], x01 = x[1], x02 = x[2], x03 = x[3]; /* k0 k2 k1 k3 */
            const int32_t x10 = x[4], x11 = x[5], x12 = x[6], x13 = x[7];
            const int32_t w00 = w[0], w01 = w[2], w02 = w[1], w03 = w[3];
            const int32_t w10 = w[4], w11 = w[6], w12 = w[5], w13 = w[7];
            a00 += w00 * x00 + w01 * x01 + w02 * x02 + w03 * x03;
            a01 += w00 * x10 + w01 * x11 + w02 * x12 + w03 * x13;
            a10 += w10 * x00 + w11 * x01 + w12 * x02 + w13 * x03;
            a11 += w10 * x10 + w11 * x11 + w12 * x12 + w13 * x13;
        }
#endif
        }
        const int32_t m0 = q.mult[ch], s0 = q.shift[ch], m1 = q.mult[ch + 1];
        const int32_t s1 = q.shift[ch + 1];
        const int8_t o00 = out_s8(&q, a00, m0, s0), o01 = out_s8(&q, a01, m0, s0);
        const int8_t o10 = out_s8(&q, a10, m1, s1), o11 = out_s8(&q, a11, m1, s1);
        out[ch] = o00;
        out[ch + 1] = o10;
        out[cout + ch] = o01;
        out[cout + ch + 1] = o11;
    }
#if CTXCONV_ASM
    for (; aligned && pixels == 1 && ch + 1 < cout; ch += 2) {
        int32_t a[4] = {bias[ch], 0, bias[ch + 1], 0};
        mac_2x1(weights + ch * kp, col, groups, a);
        const int8_t o0 = channel_out(&q, a[0], ch), o1 = channel_out(&q, a[2], ch + 1);
        out[ch] = o0;
        out[ch + 1] = o1;
    }
#endif
    for (; ch < cout; ++ch) { /* one pixel, or the odd last channel */
        const int32_t paired = ch + 1 < cout || (cout & 1) == 0;
        const int8_t *w = weights + (ch & ~1) * kp + (paired ? (ch & 1) * 4 : 0);
        const int32_t stride = paired ? 8 : 4;
        for (int32_t i = 0; i < pixels; ++i) {
            const int32_t acc = dot_row_col(w, stride, col + 4 * i, groups, bias[ch]);
            out[i * cout + ch] = channel_out(&q, acc, ch);
        }
    }
}

void ctxconv_conv_s8(const ctxconv_conv_params *p, const int8_t *in, int8_t *out, int16_t *col)
{
    int32_t filled = 0;
    int8_t *o = out;
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        for (int32_t ox = 0; ox < p->out_w; ++ox) {
            im2col(p, in, oy, ox, col, filled);
            if (++filled == 2) {
                conv_pixels(p, col, 2, o);
                o += 2 * p->out_c;
                filled = 0;
            }
        }
    }
    if (filled) {
        conv_pixels(p, col, 1, o);
    }
}

/* ------------------------------------------------------------------ fully connected */

/* int8 x int8 dot product of length n. */
static int32_t dot_s8(const int8_t *w, const int8_t *x, int32_t n, int32_t acc)
{
    int32_t k = 0;
#if CTXCONV_DSP
    for (; k + 4 <= n; k += 4) {
        const uint32_t wv = load_u32(w + k), xv = load_u32(x + k);
        acc = smlad(sxtb16(wv), sxtb16(xv), acc);
        acc = smlad(sxtb16_ror8(wv), sxtb16_ror8(xv), acc);
    }
#endif
    for (; k < n; ++k) {
        acc += w[k] * x[k];
    }
    return acc;
}


void ctxconv_fc_s8(const ctxconv_fc_params *p, const int8_t *in, int8_t *out)
{
    const int32_t n = p->in_n;
    const out_quant q = {p->mult, p->shift, p->out_offset, p->act_min, p->act_max};
    int32_t o = 0;
#if CTXCONV_DSP
    for (; o + 1 < p->out_n; o += 2) { /* two rows share each unpacked input word */
        const int8_t *w0 = p->weights + o * n, *w1 = w0 + n;
        int32_t a0 = p->bias[o], a1 = p->bias[o + 1];
        int32_t k = 0;
        for (; k + 4 <= n; k += 4) {
            const uint32_t xv = load_u32(in + k);
            const uint32_t xl = sxtb16(xv), xh = sxtb16_ror8(xv);
            uint32_t wv = load_u32(w0 + k);
            a0 = smlad(sxtb16(wv), xl, a0);
            a0 = smlad(sxtb16_ror8(wv), xh, a0);
            wv = load_u32(w1 + k);
            a1 = smlad(sxtb16(wv), xl, a1);
            a1 = smlad(sxtb16_ror8(wv), xh, a1);
        }
        for (; k < n; ++k) {
            a0 += w0[k] * in[k];
            a1 += w1[k] * in[k];
        }
        const int8_t y0 = channel_out(&q, a0, o), y1 = channel_out(&q, a1, o + 1);
        out[o] = y0;
        out[o + 1] = y1;
    }
#endif
    for (; o < p->out_n; ++o) {
        out[o] = channel_out(&q, dot_s8(p->weights + o * n, in, n, p->bias[o]), o);
    }
}

/* ------------------------------------------------------------------ pooling */

/* The in-bounds taps [ys, ye) x [xs, xe) of output pixel (oy, ox). */
typedef struct {
    int32_t ys, ye, xs, xe;
} pool_window;

static inline pool_window window_of(const ctxconv_pool_params *p, int32_t oy, int32_t ox)
{
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    pool_window w;
    w.ys = y0 < 0 ? 0 : y0;
    w.ye = y0 + p->f_h > p->in_h ? p->in_h : y0 + p->f_h;
    w.xs = x0 < 0 ? 0 : x0;
    w.xe = x0 + p->f_w > p->in_w ? p->in_w : x0 + p->f_w;
    return w;
}

#if CTXCONV_DSP
/* Per signed byte lane: the larger of a and b (SSUB8 sets the GE flags SEL reads). */
static inline uint32_t max_s8x4(uint32_t a, uint32_t b)
{
    uint32_t r;
    __asm__("ssub8 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(r) : "r"(a), "r"(b) : "cc");
    return r;
}
#endif

void ctxconv_max_pool_s8(const ctxconv_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t ch = p->channels;
    int8_t *o = out;
#if CTXCONV_DSP
    /* four channels per word when the activation range is the whole int8 range */
    const int32_t lanes = p->act_min == -128 && p->act_max == 127 ? ch & ~3 : 0;
#endif
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        for (int32_t ox = 0; ox < p->out_w; ++ox, o += ch) {
            const pool_window w = window_of(p, oy, ox);
            int32_t c = 0;
#if CTXCONV_DSP
            for (; c < lanes; c += 4) {
                uint32_t m = 0x80808080u;
                for (int32_t y = w.ys; y < w.ye; ++y) {
                    const int8_t *row = in + y * p->in_w * ch + c;
                    for (int32_t x = w.xs; x < w.xe; ++x) {
                        m = max_s8x4(m, load_u32(row + x * ch));
                    }
                }
                memcpy(o + c, &m, 4);
            }
#endif
            for (; c < ch; ++c) {
                int32_t m = -128;
                for (int32_t y = w.ys; y < w.ye; ++y) {
                    for (int32_t x = w.xs; x < w.xe; ++x) {
                        const int32_t v = in[(y * p->in_w + x) * ch + c];
                        m = v > m ? v : m;
                    }
                }
                o[c] = clamp_s8(m, p->act_min, p->act_max);
            }
        }
    }
}

/* Round half away from zero of acc / count (C division truncates toward zero). */
static inline int8_t avg_out(const ctxconv_pool_params *p, int32_t acc, int32_t count)
{
    acc = acc > 0 ? (acc + count / 2) / count : (acc - count / 2) / count;
    return clamp_s8(acc, p->act_min, p->act_max);
}

void ctxconv_avg_pool_s8(const ctxconv_pool_params *p, const int8_t *in, int8_t *out)
{
    const int32_t ch = p->channels;
    int8_t *o = out;
#if CTXCONV_DSP
    /* four channels per word, summed in int16 lanes: exact up to 256 taps */
    const int32_t lanes = p->f_h * p->f_w <= 256 ? ch & ~3 : 0;
#endif
    for (int32_t oy = 0; oy < p->out_h; ++oy) {
        for (int32_t ox = 0; ox < p->out_w; ++ox, o += ch) {
            const pool_window w = window_of(p, oy, ox);
            const int32_t count = (w.ye - w.ys) * (w.xe - w.xs);
            int32_t c = 0;
#if CTXCONV_DSP
            for (; c < lanes; c += 4) {
                uint32_t even = 0u, odd = 0u; /* channels (c, c + 2) and (c + 1, c + 3) */
                for (int32_t y = w.ys; y < w.ye; ++y) {
                    const int8_t *row = in + y * p->in_w * ch + c;
                    for (int32_t x = w.xs; x < w.xe; ++x) {
                        const uint32_t v = load_u32(row + x * ch);
                        even = sxtab16(even, v);
                        odd = sxtab16_ror8(odd, v);
                    }
                }
                const int8_t y0 = avg_out(p, (int16_t)even, count);
                const int8_t y1 = avg_out(p, (int16_t)odd, count);
                const int8_t y2 = avg_out(p, (int32_t)even >> 16, count);
                const int8_t y3 = avg_out(p, (int32_t)odd >> 16, count);
                o[c] = y0;
                o[c + 1] = y1;
                o[c + 2] = y2;
                o[c + 3] = y3;
            }
#endif
            for (; c < ch; ++c) {
                int32_t acc = 0;
                for (int32_t y = w.ys; y < w.ye; ++y) {
                    for (int32_t x = w.xs; x < w.xe; ++x) {
                        acc += in[(y * p->in_w + x) * ch + c];
                    }
                }
                o[c] = avg_out(p, acc, count);
            }
        }
    }
}

/* ------------------------------------------------------------------ add */

void ctxconv_add_s8(const ctxconv_add_params *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    int32_t j = 0;
    for (int32_t i = 0; i < p->n; ++i) {
        const int32_t sa = (int32_t)((uint32_t)(a[i] + p->a_offset) << p->left_shift);
        const int32_t sb = (int32_t)((uint32_t)(b[j] + p->b_offset) << p->left_shift);
        const int32_t ra = rdbpot(srdhm(sa, p->a_mult), -p->a_shift);
        const int32_t rb = rdbpot(srdhm(sb, p->b_mult), -p->b_shift);
        const int32_t v = rdbpot(srdhm(ra + rb, p->out_mult), -p->out_shift) + p->out_offset;
        out[i] = clamp_s8(v, p->act_min, p->act_max);
        if (++j == p->b_n) {
            j = 0;
        }
    }
}

/* ------------------------------------------------------------------ mul, mean */

void ctxconv_mul_s8(const ctxconv_mul_params *p, const int8_t *a, const int8_t *b, int8_t *out)
{
    int32_t j = 0;
    for (int32_t i = 0; i < p->n; ++i) {
        const int32_t prod = (a[i] + p->a_offset) * (b[j] + p->b_offset); /* |.| <= 255^2 */
        out[i] = clamp_s8(requantize(prod, p->mult, p->shift) + p->out_offset, p->act_min,
                          p->act_max);
        if (++j == p->b_n) {
            j = 0;
        }
    }
}

void ctxconv_mean_s8(const ctxconv_mean_params *p, const int8_t *in, int8_t *out)
{
    for (int32_t r = 0; r < p->outer; ++r) {
        uint32_t sum = 0u; /* int32 with two's-complement wrap, as the reference */
        for (int32_t i = 0; i < p->count; ++i) {
            const int32_t v = in[r * p->count + i];
            sum += (uint32_t)v;
        }
        const int32_t shifted = (int32_t)(sum - (uint32_t)p->zp_times_count);
        out[r] = clamp_s8(requantize(shifted, p->mult, p->shift) + p->out_offset, -128, 127);
    }
}

/* ------------------------------------------------------------------ l2 normalization */

/* gemmlowp SaturatingRoundingMultiplyByPOT<e>, e > 0: a saturating left shift. */
static inline int32_t srmbpot(int32_t x, int32_t e)
{
    const int32_t threshold = (int32_t)((1u << (31 - e)) - 1u);
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return (int32_t)((uint32_t)x << e);
}

/* TFLite GetInvSqrtQuantizedMultiplierExp(acc, kReverseShift): 1 / sqrt(acc) as a
 * multiplier and a left shift; five Newton-Raphson steps in Q3.28, step by step. */
static void inv_sqrt_multiplier(int32_t acc, int32_t *mult, int32_t *shift)
{
    if (acc <= 1) {
        *mult = INT32_MAX;
        *shift = 0;
        return;
    }
    int32_t s = 11;
    while (acc >= (1 << 29)) {
        acc /= 4;
        ++s;
    }
    int32_t clz = 0;
    for (uint32_t v = (uint32_t)acc; !(v & 0x80000000u); v <<= 1) {
        ++clz;
    }
    const int32_t pairs = (clz - 1) / 2 - 1;
    s -= pairs;
    acc <<= 2 * pairs; /* in [2^27, 2^29) */
    const int32_t half_input = rdbpot(acc >> 1, 1);
    const int32_t half_three = (1 << 28) + (1 << 27); /* 1.5 in Q3.28 */
    int32_t x = 1 << 28;                              /* 1.0 in Q3.28 */
    for (int32_t i = 0; i < 5; ++i) {
        const int32_t x3 = srmbpot(srdhm(srdhm(x, x), x), 6);
        const int32_t diff = (int32_t)((uint32_t)srdhm(half_three, x) -
                                       (uint32_t)srdhm(half_input, x3));
        x = srmbpot(diff, 3);
    }
    x = srdhm(x, 1518500250); /* * sqrt(2) / 2 in Q0.31 */
    if (s < 0) {
        x = (int32_t)((uint32_t)x << -s);
        s = 0;
    }
    *mult = x;
    *shift = -s;
}

void ctxconv_l2norm_s8(const ctxconv_l2norm_params *p, const int8_t *in, int8_t *out)
{
    for (int32_t r = 0; r < p->outer; ++r) {
        const int8_t *x = in + r * p->depth;
        int8_t *y = out + r * p->depth;
        uint32_t acc = 0u;
        for (int32_t i = 0; i < p->depth; ++i) {
            const int32_t v = x[i] + p->in_offset;
            acc += (uint32_t)(v * v);
        }
        int32_t mult, shift;
        inv_sqrt_multiplier((int32_t)acc, &mult, &shift);
        for (int32_t i = 0; i < p->depth; ++i) {
            y[i] = clamp_s8(requantize(x[i] + p->in_offset, mult, shift + 7), -128, 127);
        }
    }
}
