/* One in-place training step of one block with int8 weights (see ctxconv_train.h and
 * ctxconv/ondevice/qas.py, whose float operations this repeats in order). */
#include "ctxconv_train.h"

/* the geometry's names inside this file */
#define BATCH CTXCONV_TRAIN_BATCH
#define CELL CTXCONV_TRAIN_CELL
#define CLASSES CTXCONV_TRAIN_CLASSES
#define FILTERS CTXCONV_TRAIN_FILTERS
#define GRID CTXCONV_TRAIN_GRID
#define IN_CHANNELS CTXCONV_TRAIN_IN_CHANNELS
#define IN_SIZE CTXCONV_TRAIN_IN_SIZE
#define KERNEL CTXCONV_TRAIN_KERNEL
#define NFLAT CTXCONV_TRAIN_NFLAT
#define OUT_SIZE CTXCONV_TRAIN_OUT_SIZE
#define PIXELS CTXCONV_TRAIN_PIXELS
#define POOL CTXCONV_TRAIN_POOL
#define POOLED_BYTES CTXCONV_TRAIN_POOLED_BYTES
#define TAPS CTXCONV_TRAIN_TAPS

#include <math.h>
#include <string.h>

#define GG (GRID * GRID)
#define PAD (KERNEL / 2)

int8_t ctxconv_train_conv_q[FILTERS * TAPS];
float ctxconv_train_conv_s[FILTERS], ctxconv_train_conv_b[FILTERS];
int8_t ctxconv_train_head_q[CLASSES * NFLAT];
float ctxconv_train_head_s[CLASSES], ctxconv_train_head_b[CLASSES];
float ctxconv_train_in_scale;
int32_t ctxconv_train_in_zero_point;

/* the step's buffers (names as in ondevice/inplace.py) */
static int8_t inputs[BATCH * POOLED_BYTES];                 /* block inputs, pooled */
static uint8_t masks[(BATCH * PIXELS * FILTERS + 7) / 8]; /* ReLU masks (bits) */
static float z[BATCH * NFLAT];                               /* pooled grid */
static float ds[BATCH * CLASSES];                            /* scores -> dL/dscores */
static float gw[TAPS];                                          /* one channel's gradient */
static float cdz[BATCH * GG];                                /* its grid gradient */

void ctxconv_train_set_input(int32_t r, const int8_t *x)
{
    int8_t *out = inputs + r * POOLED_BYTES;
    for (int32_t y = 0; y < OUT_SIZE; ++y) {
        for (int32_t xx = 0; xx < OUT_SIZE; ++xx) {
            for (int32_t c = 0; c < IN_CHANNELS; ++c) {
                int8_t m = -128;
                for (int32_t dy = 0; dy < POOL; ++dy) {
                    for (int32_t dx = 0; dx < POOL; ++dx) {
                        const int8_t v = x[((y * POOL + dy) * IN_SIZE + xx * POOL + dx)
                                           * IN_CHANNELS + c];
                        m = v > m ? v : m;
                    }
                }
                out[(y * OUT_SIZE + xx) * IN_CHANNELS + c] = m;
            }
        }
    }
}

/* e^x for x in [-80, 0]: x = n ln2 + r, degree-6 polynomial of e^r (qas.exp_f32) */
static float exp_f32(float x)
{
    if (x < -80.0f) {
        x = -80.0f;
    }
    if (x > 0.0f) {
        x = 0.0f;
    }
    const float n = (float)(int32_t)(x * 1.44269504f - 0.5f);
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-06f;
    float p = (float)(1.0 / 720.0);
    p = p * r + (float)(1.0 / 120.0);
    p = p * r + (float)(1.0 / 24.0);
    p = p * r + (float)(1.0 / 6.0);
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        uint32_t u;
        float f;
    } two;
    two.u = (uint32_t)((int32_t)n + 127) << 23;
    return p * two.f;
}

static uint32_t hash32(uint32_t x)
{
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}

static float uniform(uint32_t key, uint32_t index)
{
    return (float)(hash32(key ^ index) >> 8) * (1.0f / 16777216.0f);
}

static int8_t to_int8(float v, int32_t stochastic, uint32_t key, uint32_t index)
{
    const float r = stochastic ? floorf(v + uniform(key, index)) : rintf(v);
    return (int8_t)(r > 127.0f ? 127 : (r < -127.0f ? -127 : (int32_t)r));
}

static void forward(int32_t batch)
{
    float mul[FILTERS];
    const float inv_cc = 1.0f / (float)(CELL * CELL);
    for (int32_t o = 0; o < FILTERS; ++o) {
        mul[o] = ctxconv_train_in_scale * ctxconv_train_conv_s[o];
    }
    memset(masks, 0, sizeof masks);
    memset(z, 0, sizeof z);
    for (int32_t r = 0; r < batch; ++r) {
        const int8_t *x = inputs + r * POOLED_BYTES;
        float *zr = z + r * NFLAT;
        for (int32_t oy = 0; oy < OUT_SIZE; ++oy) {
            for (int32_t ox = 0; ox < OUT_SIZE; ++ox) {
                const int32_t p = oy * OUT_SIZE + ox;
                float *zc = zr + ((oy / CELL) * GRID + ox / CELL) * FILTERS;
                for (int32_t o = 0; o < FILTERS; ++o) {
                    const int8_t *w = ctxconv_train_conv_q + o * TAPS;
                    int32_t acc = 0;
                    for (int32_t ky = 0; ky < KERNEL; ++ky) {
                        const int32_t iy = oy + ky - PAD;
                        if (iy < 0 || iy >= OUT_SIZE) {
                            continue;
                        }
                        for (int32_t kx = 0; kx < KERNEL; ++kx) {
                            const int32_t ix = ox + kx - PAD;
                            if (ix < 0 || ix >= OUT_SIZE) {
                                continue;
                            }
                            const int8_t *xi = x + (iy * OUT_SIZE + ix) * IN_CHANNELS;
                            const int8_t *wi = w + (ky * KERNEL + kx) * IN_CHANNELS;
                            for (int32_t c = 0; c < IN_CHANNELS; ++c) {
                                acc += ((int32_t)xi[c] - ctxconv_train_in_zero_point)
                                       * (int32_t)wi[c];
                            }
                        }
                    }
                    const float pre = (float)acc * mul[o] + ctxconv_train_conv_b[o];
                    if (pre > 0.0f) {
                        const int32_t bit = (r * PIXELS + p) * FILTERS + o;
                        masks[bit >> 3] |= (uint8_t)(1u << (bit & 7));
                        zc[o] += pre;
                    }
                }
            }
        }
        for (int32_t j = 0; j < NFLAT; ++j) {
            zr[j] = zr[j] * inv_cc;
        }
        for (int32_t k = 0; k < CLASSES; ++k) {
            const int8_t *hq = ctxconv_train_head_q + k * NFLAT;
            float acc = 0.0f;
            for (int32_t j = 0; j < NFLAT; ++j) {
                acc = acc + zr[j] * (float)hq[j];
            }
            ds[r * CLASSES + k] = acc * ctxconv_train_head_s[k] + ctxconv_train_head_b[k];
        }
    }
}

/* softmax cross-entropy: scores in ds become dL/dscores; returns the mean loss */
static float softmax(const uint8_t *labels, int32_t batch, int32_t *correct)
{
    float loss = 0.0f;
    *correct = 0;
    for (int32_t r = 0; r < batch; ++r) {
        float *s = ds + r * CLASSES;
        float m = s[0];
        int32_t best = 0;
        for (int32_t k = 1; k < CLASSES; ++k) {
            if (s[k] > m) {
                m = s[k];
                best = k;
            }
        }
        *correct += best == labels[r];
        float e[CLASSES];
        float sum = 0.0f;
        for (int32_t k = 0; k < CLASSES; ++k) {
            e[k] = exp_f32(s[k] - m);
        }
        for (int32_t k = 0; k < CLASSES; ++k) {
            sum = sum + e[k];
        }
        loss = loss + (logf(sum) - (s[labels[r]] - m));
        for (int32_t k = 0; k < CLASSES; ++k) {
            float p = e[k] / sum;
            if (k == labels[r]) {
                p = p - 1.0f;
            }
            s[k] = p / (float)batch;
        }
    }
    return loss / (float)batch;
}

/* update conv channel o in place (its gradient from the kept inputs, masks and dz) */
static int32_t update_channel(int32_t o, int32_t batch, float lr, uint32_t key,
                              int32_t stochastic)
{
    const float inv_cc = 1.0f / (float)(CELL * CELL);
    for (int32_t r = 0; r < batch; ++r) {
        for (int32_t cell = 0; cell < GG; ++cell) {
            float dz = 0.0f;
            for (int32_t k = 0; k < CLASSES; ++k) {
                const float wk = ds[r * CLASSES + k] * ctxconv_train_head_s[k];
                dz = dz + wk * (float)ctxconv_train_head_q[k * NFLAT + cell * FILTERS + o];
            }
            cdz[r * GG + cell] = dz * inv_cc;
        }
    }
    memset(gw, 0, sizeof gw);
    float gb = 0.0f;
    for (int32_t r = 0; r < batch; ++r) {
        const int8_t *x = inputs + r * POOLED_BYTES;
        float rs = 0.0f;
        for (int32_t oy = 0; oy < OUT_SIZE; ++oy) {
            for (int32_t ox = 0; ox < OUT_SIZE; ++ox) {
                const int32_t bit = (r * PIXELS + oy * OUT_SIZE + ox) * FILTERS + o;
                if (!(masks[bit >> 3] & (1u << (bit & 7)))) {
                    continue;
                }
                const float d = cdz[r * GG + (oy / CELL) * GRID + ox / CELL];
                rs = rs + d;
                for (int32_t ky = 0; ky < KERNEL; ++ky) {
                    const int32_t iy = oy + ky - PAD;
                    if (iy < 0 || iy >= OUT_SIZE) {
                        continue;
                    }
                    for (int32_t kx = 0; kx < KERNEL; ++kx) {
                        const int32_t ix = ox + kx - PAD;
                        if (ix < 0 || ix >= OUT_SIZE) {
                            continue;
                        }
                        const int8_t *xi = x + (iy * OUT_SIZE + ix) * IN_CHANNELS;
                        float *g = gw + (ky * KERNEL + kx) * IN_CHANNELS;
                        for (int32_t c = 0; c < IN_CHANNELS; ++c) {
                            g[c] = g[c] + d * (float)((int32_t)xi[c] - ctxconv_train_in_zero_point);
                        }
                    }
                }
            }
        }
        gb = gb + rs;
    }
    const float a = (lr * ctxconv_train_in_scale) / ctxconv_train_conv_s[o];
    int8_t *q = ctxconv_train_conv_q + o * TAPS;
    float m = 0.0f;
    for (int32_t t = 0; t < TAPS; ++t) {
        gw[t] = (float)q[t] - a * gw[t]; /* gw now holds the new value in int8 units */
        const float v = fabsf(gw[t]);
        m = v > m ? v : m;
    }
    const int32_t grow = m > 127.0f;
    const float f = grow ? m / 127.0f : 1.0f;
    for (int32_t t = 0; t < TAPS; ++t) {
        q[t] = to_int8(grow ? gw[t] / f : gw[t], stochastic, key, (uint32_t)(o * TAPS + t));
    }
    ctxconv_train_conv_s[o] = ctxconv_train_conv_s[o] * f;
    ctxconv_train_conv_b[o] = ctxconv_train_conv_b[o] - lr * gb;
    return grow;
}

/* update head row k in place: the row's gradient is computed twice (its maximum, then the
 * rounding) instead of being stored */
static int32_t update_head_row(int32_t k, int32_t batch, float lr, uint32_t key,
                               int32_t stochastic)
{
    const float a = lr / ctxconv_train_head_s[k];
    int8_t *q = ctxconv_train_head_q + k * NFLAT;
    float m = 0.0f;
    for (int32_t j = 0; j < NFLAT; ++j) {
        float g = 0.0f;
        for (int32_t r = 0; r < batch; ++r) {
            g = g + ds[r * CLASSES + k] * z[r * NFLAT + j];
        }
        const float v = fabsf((float)q[j] - a * g);
        m = v > m ? v : m;
    }
    const int32_t grow = m > 127.0f;
    const float f = grow ? m / 127.0f : 1.0f;
    for (int32_t j = 0; j < NFLAT; ++j) {
        float g = 0.0f;
        for (int32_t r = 0; r < batch; ++r) {
            g = g + ds[r * CLASSES + k] * z[r * NFLAT + j];
        }
        const float v = (float)q[j] - a * g;
        q[j] = to_int8(grow ? v / f : v, stochastic, key,
                       (uint32_t)(FILTERS * TAPS + k * NFLAT + j));
    }
    float gb = 0.0f;
    for (int32_t r = 0; r < batch; ++r) {
        gb = gb + ds[r * CLASSES + k];
    }
    ctxconv_train_head_s[k] = ctxconv_train_head_s[k] * f;
    ctxconv_train_head_b[k] = ctxconv_train_head_b[k] - lr * gb;
    return grow;
}

ctxconv_train_step_result ctxconv_train_step(const uint8_t *labels, int32_t batch, float lr,
                                             uint32_t step, uint32_t seed, int32_t stochastic)
{
    ctxconv_train_step_result res;
    const uint32_t key = hash32(seed + step * 0x9E3779B9u);
    forward(batch);
    res.loss = softmax(labels, batch, &res.correct);
    res.rescaled = 0;
    for (int32_t o = 0; o < FILTERS; ++o) {
        res.rescaled += update_channel(o, batch, lr, key, stochastic);
    }
    for (int32_t k = 0; k < CLASSES; ++k) {
        res.rescaled += update_head_row(k, batch, lr, key, stochastic);
    }
    return res;
}
