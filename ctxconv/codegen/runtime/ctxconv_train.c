/* SPDX-License-Identifier: Apache-2.0 */
/* ctxconv on-device training (see ctxconv_train.h). Every float32 operation repeats
 * ctxconv/ondevice/qas.py in order, so the int8 weights match the simulator's bit for
 * bit; the inference parameters follow ctxconv/blockgraph/trainable.py (with_state). */
#include "ctxconv_train.h"

#include <math.h>
#include <string.h>

#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#if CTXCONV_TRAIN_BLOCKS

#define MAXB CTXCONV_TRAIN_MAX_BATCH

/* the step's buffers (names as in ondevice/inplace.py), sized for the largest block built
 * trainable */
static int8_t inputs[MAXB * CTXCONV_TRAIN_MAX_POOLED_BYTES]; /* kept block inputs, pooled */
static uint8_t labels[MAXB];
static uint8_t masks[(MAXB * CTXCONV_TRAIN_MAX_MASK_BITS + 7) / 8]; /* ReLU masks (bits) */
static float z[MAXB * CTXCONV_TRAIN_MAX_NFLAT];                     /* pooled grid */
static float ds[MAXB * CTXCONV_NUM_CLASSES];                        /* scores -> dL/dscores */
static float gw[CTXCONV_TRAIN_MAX_TAPS];                            /* one channel's gradient */
static int8_t row[CTXCONV_TRAIN_MAX_TAPS];                          /* its weights, unpacked */
static float cdz[MAXB * CTXCONV_TRAIN_MAX_CELLS];                   /* its grid gradient */

static ctxconv_train_config config;
static const ctxconv_train_block *active;
static int32_t pending;
static ctxconv_train_counters counters;

static int32_t out_size(const ctxconv_train_block *b) { return b->in_size / b->pool; }
static int32_t taps(const ctxconv_train_block *b)
{
    return b->kernel * b->kernel * b->in_channels;
}
static int32_t n_flat(const ctxconv_train_block *b) { return b->grid * b->grid * b->filters; }

/* byte of weight t of channel o in the conv layout: channel pairs interleaved in groups of
 * 4 weights, an odd last channel's row alone */
static int32_t conv_index(const ctxconv_train_block *b, int32_t o, int32_t t)
{
    const int32_t pairs = b->filters / 2 * 2;
    if (o < pairs) {
        return (((o / 2) * (b->k_padded / 4) + t / 4) * 2 + (o & 1)) * 4 + (t & 3);
    }
    return o * b->k_padded + t;
}

int8_t ctxconv_train_conv_weight(const ctxconv_train_block *b, int32_t o, int32_t t)
{
    return b->conv_weights[conv_index(b, o, t)];
}

static void unpack_row(const ctxconv_train_block *b, int32_t o)
{
    for (int32_t t = 0; t < taps(b); ++t) {
        row[t] = b->conv_weights[conv_index(b, o, t)];
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

static uint32_t step_key(uint32_t seed, uint32_t step)
{
    return hash32(seed + step * 0x9E3779B9u);
}

static int8_t to_int8(float v, int32_t stochastic, uint32_t key, uint32_t index)
{
    const float r = stochastic ? floorf(v + uniform(key, index)) : rintf(v);
    return (int8_t)(r > 127.0f ? 127 : (r < -127.0f ? -127 : (int32_t)r));
}

/* ---- inference parameters from the training state (trainable.with_state) */

/* TFLite's QuantizeMultiplier in double (fixedpoint.quantize_multiplier) */
static void quantize_multiplier(double m, int32_t *mult, int32_t *shift)
{
    if (m == 0.0) {
        *mult = 0;
        *shift = 0;
        return;
    }
    int e;
    const double f = frexp(m, &e);
    int64_t q = (int64_t)round(f * 2147483648.0);
    if (q == 2147483648LL) {
        q /= 2;
        ++e;
    }
    if (e < -31) {
        e = 0;
        q = 0;
    }
    *mult = (int32_t)q;
    *shift = (int32_t)e;
}

static int32_t bias_int32(float bias, float x_scale, float w_scale)
{
    const double v = round((double)bias / ((double)x_scale * (double)w_scale));
    return v >= 2147483647.0 ? INT32_MAX : (v <= -2147483648.0 ? INT32_MIN : (int32_t)v);
}

static void refresh_conv(const ctxconv_train_block *b)
{
    for (int32_t o = 0; o < b->filters; ++o) {
        b->conv_bias[o] = bias_int32(b->conv_b[o], b->in_scale, b->conv_s[o]);
        quantize_multiplier((double)b->in_scale * (double)b->conv_s[o] / (double)b->out_scale,
                            &b->conv_mult[o], &b->conv_shift[o]);
    }
}

static void refresh_head(const ctxconv_train_block *b)
{
    const int32_t n = n_flat(b);
    for (int32_t k = 0; k < b->classes; ++k) {
        int64_t sum = 0;
        for (int32_t j = 0; j < n; ++j) {
            sum += b->head_weights[k * n + j];
        }
        /* the input offset folded into the bias (fully_connected.prepare), int32 wrap */
        const int64_t folded =
            (int64_t)bias_int32(b->head_b[k], b->grid_scale, b->head_s[k])
            - (int64_t)b->grid_zero_point * sum;
        b->head_bias[k] = (int32_t)(uint32_t)(uint64_t)folded;
        quantize_multiplier(
            (double)b->grid_scale * (double)b->head_s[k] / (double)b->score_scale,
            &b->head_mult[k], &b->head_shift[k]);
    }
}

/* ---- the step */

static void set_input(const ctxconv_train_block *b, int32_t r, const int8_t *x)
{
    const int32_t out = out_size(b), cin = b->in_channels, pool = b->pool;
    int8_t *dst = inputs + r * out * out * cin;
    for (int32_t y = 0; y < out; ++y) {
        for (int32_t xx = 0; xx < out; ++xx) {
            for (int32_t c = 0; c < cin; ++c) {
                int8_t m = -128;
                for (int32_t dy = 0; dy < pool; ++dy) {
                    for (int32_t dx = 0; dx < pool; ++dx) {
                        const int8_t v =
                            x[((y * pool + dy) * b->in_size + xx * pool + dx) * cin + c];
                        m = v > m ? v : m;
                    }
                }
                dst[(y * out + xx) * cin + c] = m;
            }
        }
    }
}

/* channel o's int32 accumulator at output pixel (oy, ox) of kept input x ('same' padding) */
static int32_t conv_acc(const ctxconv_train_block *b, const int8_t *x, int32_t oy, int32_t ox)
{
    const int32_t out = out_size(b), k = b->kernel, pad = b->kernel / 2, cin = b->in_channels;
    int32_t acc = 0;
    for (int32_t ky = 0; ky < k; ++ky) {
        const int32_t iy = oy + ky - pad;
        if (iy < 0 || iy >= out) {
            continue;
        }
        for (int32_t kx = 0; kx < k; ++kx) {
            const int32_t ix = ox + kx - pad;
            if (ix < 0 || ix >= out) {
                continue;
            }
            const int8_t *xi = x + (iy * out + ix) * cin;
            const int8_t *wi = row + (ky * k + kx) * cin;
            for (int32_t c = 0; c < cin; ++c) {
                acc += ((int32_t)xi[c] - b->in_zero_point) * (int32_t)wi[c];
            }
        }
    }
    return acc;
}

static void forward(const ctxconv_train_block *b, int32_t batch)
{
    const int32_t out = out_size(b), pixels = out * out, cell = out / b->grid;
    const int32_t nf = n_flat(b), filters = b->filters, pooled = pixels * b->in_channels;
    const float inv_cc = 1.0f / (float)(cell * cell);
    memset(masks, 0, (size_t)(batch * pixels * filters + 7) / 8);
    memset(z, 0, sizeof(float) * (size_t)(batch * nf));
    for (int32_t o = 0; o < filters; ++o) { /* per channel; each z entry sums in pixel order */
        const float mul = b->in_scale * b->conv_s[o];
        unpack_row(b, o);
        for (int32_t r = 0; r < batch; ++r) {
            const int8_t *x = inputs + r * pooled;
            float *zr = z + r * nf;
            for (int32_t oy = 0; oy < out; ++oy) {
                for (int32_t ox = 0; ox < out; ++ox) {
                    const float pre = (float)conv_acc(b, x, oy, ox) * mul + b->conv_b[o];
                    if (pre > 0.0f) {
                        const int32_t bit = (r * pixels + oy * out + ox) * filters + o;
                        masks[bit >> 3] |= (uint8_t)(1u << (bit & 7));
                        zr[((oy / cell) * b->grid + ox / cell) * filters + o] += pre;
                    }
                }
            }
        }
    }
    for (int32_t r = 0; r < batch; ++r) {
        float *zr = z + r * nf;
        for (int32_t j = 0; j < nf; ++j) {
            zr[j] = zr[j] * inv_cc;
        }
        for (int32_t k = 0; k < b->classes; ++k) {
            const int8_t *hq = b->head_weights + k * nf;
            float acc = 0.0f;
            for (int32_t j = 0; j < nf; ++j) {
                acc = acc + zr[j] * (float)hq[j];
            }
            ds[r * b->classes + k] = acc * b->head_s[k] + b->head_b[k];
        }
    }
}

/* softmax cross-entropy: scores in ds become dL/dscores; returns the mean loss */
static float softmax(int32_t classes, int32_t batch, uint32_t *correct)
{
    float loss = 0.0f;
    for (int32_t r = 0; r < batch; ++r) {
        float *s = ds + r * classes;
        float m = s[0];
        int32_t best = 0;
        for (int32_t k = 1; k < classes; ++k) {
            if (s[k] > m) {
                m = s[k];
                best = k;
            }
        }
        *correct += best == labels[r];
        float e[CTXCONV_NUM_CLASSES];
        float sum = 0.0f;
        for (int32_t k = 0; k < classes; ++k) {
            e[k] = exp_f32(s[k] - m);
        }
        for (int32_t k = 0; k < classes; ++k) {
            sum = sum + e[k];
        }
        loss = loss + (logf(sum) - (s[labels[r]] - m));
        for (int32_t k = 0; k < classes; ++k) {
            float p = e[k] / sum;
            if (k == labels[r]) {
                p = p - 1.0f;
            }
            s[k] = p / (float)batch;
        }
    }
    return loss / (float)batch;
}

/* update conv channel o in place (its gradient from the kept inputs, masks and dz); with
 * weights = 0 only its bias */
static int32_t update_channel(const ctxconv_train_block *b, int32_t o, int32_t batch,
                              uint32_t key, int32_t weights)
{
    const int32_t out = out_size(b), pixels = out * out, cell = out / b->grid;
    const int32_t gg = b->grid * b->grid, nf = n_flat(b), nt = taps(b);
    const int32_t k_size = b->kernel, pad = b->kernel / 2, cin = b->in_channels;
    const int32_t pooled = pixels * cin;
    const float inv_cc = 1.0f / (float)(cell * cell), lr = config.lr;
    for (int32_t r = 0; r < batch; ++r) {
        for (int32_t c = 0; c < gg; ++c) {
            float dz = 0.0f;
            for (int32_t k = 0; k < b->classes; ++k) {
                const float wk = ds[r * b->classes + k] * b->head_s[k];
                dz = dz + wk * (float)b->head_weights[k * nf + c * b->filters + o];
            }
            cdz[r * gg + c] = dz * inv_cc;
        }
    }
    memset(gw, 0, sizeof(float) * (size_t)nt);
    float gb = 0.0f;
    for (int32_t r = 0; r < batch; ++r) {
        const int8_t *x = inputs + r * pooled;
        float rs = 0.0f;
        for (int32_t oy = 0; oy < out; ++oy) {
            for (int32_t ox = 0; ox < out; ++ox) {
                const int32_t bit = (r * pixels + oy * out + ox) * b->filters + o;
                if (!(masks[bit >> 3] & (1u << (bit & 7)))) {
                    continue;
                }
                const float d = cdz[r * gg + (oy / cell) * b->grid + ox / cell];
                rs = rs + d;
                for (int32_t ky = 0; ky < k_size * weights; ++ky) {
                    const int32_t iy = oy + ky - pad;
                    if (iy < 0 || iy >= out) {
                        continue;
                    }
                    for (int32_t kx = 0; kx < k_size; ++kx) {
                        const int32_t ix = ox + kx - pad;
                        if (ix < 0 || ix >= out) {
                            continue;
                        }
                        const int8_t *xi = x + (iy * out + ix) * cin;
                        float *g = gw + (ky * k_size + kx) * cin;
                        for (int32_t c = 0; c < cin; ++c) {
                            g[c] = g[c] + d * (float)((int32_t)xi[c] - b->in_zero_point);
                        }
                    }
                }
            }
        }
        gb = gb + rs;
    }
    int32_t grow = 0;
    if (weights) {
        const float a = (lr * b->in_scale) / b->conv_s[o];
        unpack_row(b, o);
        float m = 0.0f;
        for (int32_t t = 0; t < nt; ++t) {
            gw[t] = (float)row[t] - a * gw[t]; /* gw now holds the new value in int8 units */
            const float v = fabsf(gw[t]);
            m = v > m ? v : m;
        }
        grow = m > 127.0f;
        const float f = grow ? m / 127.0f : 1.0f;
        for (int32_t t = 0; t < nt; ++t) {
            b->conv_weights[conv_index(b, o, t)] = to_int8(
                grow ? gw[t] / f : gw[t], config.stochastic, key, (uint32_t)(o * nt + t));
        }
        b->conv_s[o] = b->conv_s[o] * f;
    }
    b->conv_b[o] = b->conv_b[o] - lr * gb;
    return grow;
}

/* update head row k in place (weights = 0: its bias only); the row's gradient is computed
 * twice (its maximum, then the rounding) instead of being stored */
static int32_t update_head_row(const ctxconv_train_block *b, int32_t k, int32_t batch,
                               uint32_t key, int32_t weights)
{
    const int32_t nf = n_flat(b), classes = b->classes;
    const uint32_t base = (uint32_t)(b->filters * taps(b));
    const float lr = config.lr;
    int32_t grow = 0;
    if (weights) {
        const float a = lr / b->head_s[k];
        int8_t *q = b->head_weights + k * nf;
        float m = 0.0f;
        for (int32_t j = 0; j < nf; ++j) {
            float g = 0.0f;
            for (int32_t r = 0; r < batch; ++r) {
                g = g + ds[r * classes + k] * z[r * nf + j];
            }
            const float v = fabsf((float)q[j] - a * g);
            m = v > m ? v : m;
        }
        grow = m > 127.0f;
        const float f = grow ? m / 127.0f : 1.0f;
        for (int32_t j = 0; j < nf; ++j) {
            float g = 0.0f;
            for (int32_t r = 0; r < batch; ++r) {
                g = g + ds[r * classes + k] * z[r * nf + j];
            }
            const float v = (float)q[j] - a * g;
            q[j] = to_int8(grow ? v / f : v, config.stochastic, key,
                           base + (uint32_t)(k * nf + j));
        }
        b->head_s[k] = b->head_s[k] * f;
    }
    float gb = 0.0f;
    for (int32_t r = 0; r < batch; ++r) {
        gb = gb + ds[r * classes + k];
    }
    b->head_b[k] = b->head_b[k] - lr * gb;
    return grow;
}

static int32_t step(const ctxconv_train_block *b, int32_t batch)
{
    uint32_t correct = 0;
    const uint32_t key = step_key(config.seed, counters.steps);
    forward(b, batch);
    const float loss = softmax(b->classes, batch, &correct);
    if (!isfinite(loss)) {
        return CTXCONV_TRAIN_E_DIVERGED; /* nothing updated */
    }
    const int32_t conv = config.update != CTXCONV_UPDATE_HEAD;
    uint32_t rescaled = 0;
    for (int32_t o = 0; o < b->filters * conv; ++o) {
        rescaled += (uint32_t)update_channel(b, o, batch, key,
                                             config.update == CTXCONV_UPDATE_ALL);
    }
    for (int32_t k = 0; k < b->classes; ++k) {
        rescaled += (uint32_t)update_head_row(b, k, batch, key,
                                              config.update != CTXCONV_UPDATE_BIAS);
    }
    if (conv) {
        refresh_conv(b);
    }
    refresh_head(b);
    counters.steps += 1;
    counters.correct += correct;
    counters.rescaled += rescaled;
    counters.last_loss = loss;
    counters.loss_sum = counters.loss_sum + loss;
    return CTXCONV_TRAIN_STEPPED;
}

/* ---- the API */

static const ctxconv_train_block *trainable(int32_t block)
{
    return block >= 0 && block < CTXCONV_NUM_BLOCKS ? ctxconv_train_blocks[block] : 0;
}

int32_t ctxconv_train_configure(const ctxconv_train_config *cfg)
{
    active = 0;
    if (!trainable(cfg->block)) {
        return CTXCONV_TRAIN_E_BLOCK;
    }
    if (cfg->update < CTXCONV_UPDATE_ALL || cfg->update > CTXCONV_UPDATE_BIAS || cfg->batch < 1
        || cfg->batch > MAXB || !(cfg->lr > 0.0f) || !isfinite(cfg->lr)
        || (cfg->stochastic != 0 && cfg->stochastic != 1)) {
        return CTXCONV_TRAIN_E_CONFIG;
    }
    config = *cfg;
    active = trainable(cfg->block);
    pending = 0;
    memset(&counters, 0, sizeof counters);
    return CTXCONV_TRAIN_OK;
}

int32_t ctxconv_train_reinit(int32_t block, uint32_t seed)
{
    const ctxconv_train_block *b = trainable(block);
    if (!b) {
        return CTXCONV_TRAIN_E_BLOCK;
    }
    /* draws: conv weights, conv biases, head weights, head biases (qas.hash_init) */
    const uint32_t key = step_key(seed, 0xFFFFFFFFu);
    const int32_t nt = taps(b), nf = n_flat(b);
    const float bound_c = 1.0f / sqrtf((float)nt), bound_h = 1.0f / sqrtf((float)nf);
    uint32_t index = 0;
    for (int32_t o = 0; o < b->filters; ++o) {
        float m = 0.0f;
        for (int32_t t = 0; t < nt; ++t) {
            gw[t] = (2.0f * uniform(key, index++) - 1.0f) * bound_c;
            m = fabsf(gw[t]) > m ? fabsf(gw[t]) : m;
        }
        const float s = (m > 1e-8f ? m : 1e-8f) / 127.0f;
        for (int32_t t = 0; t < nt; ++t) {
            b->conv_weights[conv_index(b, o, t)] = to_int8(gw[t] / s, 0, 0, 0);
        }
        b->conv_s[o] = s;
    }
    for (int32_t o = 0; o < b->filters; ++o) {
        b->conv_b[o] = (2.0f * uniform(key, index++) - 1.0f) * bound_c;
    }
    for (int32_t k = 0; k < b->classes; ++k) {
        int8_t *q = b->head_weights + k * nf;
        const uint32_t first = index;
        float m = 0.0f;
        for (int32_t j = 0; j < nf; ++j) {
            const float w = (2.0f * uniform(key, index++) - 1.0f) * bound_h;
            m = fabsf(w) > m ? fabsf(w) : m;
        }
        const float s = (m > 1e-8f ? m : 1e-8f) / 127.0f;
        for (int32_t j = 0; j < nf; ++j) { /* drawn again: no row buffer of floats */
            const float w = (2.0f * uniform(key, first + (uint32_t)j) - 1.0f) * bound_h;
            q[j] = to_int8(w / s, 0, 0, 0);
        }
        b->head_s[k] = s;
    }
    for (int32_t k = 0; k < b->classes; ++k) {
        b->head_b[k] = (2.0f * uniform(key, index++) - 1.0f) * bound_h;
    }
    refresh_conv(b);
    refresh_head(b);
    return CTXCONV_TRAIN_OK;
}

int32_t ctxconv_train_feed_input(const int8_t *block_input, int32_t label)
{
    if (!active) {
        return CTXCONV_TRAIN_E_STATE;
    }
    if (label < 0 || label >= CTXCONV_NUM_CLASSES) {
        return CTXCONV_TRAIN_E_LABEL;
    }
    set_input(active, pending, block_input);
    labels[pending] = (uint8_t)label;
    counters.samples += 1;
    if (++pending < config.batch) {
        return CTXCONV_TRAIN_OK;
    }
    pending = 0;
    return step(active, config.batch);
}

int32_t ctxconv_train_feed(const uint8_t *pixels, int32_t label)
{
    if (!active) {
        return CTXCONV_TRAIN_E_STATE;
    }
    if (label < 0 || label >= CTXCONV_NUM_CLASSES) {
        return CTXCONV_TRAIN_E_LABEL;
    }
    ctxconv_quantize_image(pixels, ctxconv_input_buffer());
    const int8_t *x = ctxconv_input_buffer();
    for (int32_t i = 0; i < config.block; ++i) {
        ctxconv_run_features(i);
        x = ctxconv_block_features(i);
    }
    return ctxconv_train_feed_input(x, label);
}

ctxconv_train_counters ctxconv_train_get_counters(void)
{
    return counters;
}

#else /* CTXCONV_TRAIN_BLOCKS == 0: inference only */

const ctxconv_train_block *const ctxconv_train_blocks[CTXCONV_NUM_BLOCKS] = {0};

int32_t ctxconv_train_configure(const ctxconv_train_config *cfg)
{
    (void)cfg;
    return CTXCONV_TRAIN_E_BLOCK;
}

int32_t ctxconv_train_reinit(int32_t block, uint32_t seed)
{
    (void)block;
    (void)seed;
    return CTXCONV_TRAIN_E_BLOCK;
}

int32_t ctxconv_train_feed_input(const int8_t *block_input, int32_t label)
{
    (void)block_input;
    (void)label;
    return CTXCONV_TRAIN_E_STATE;
}

int32_t ctxconv_train_feed(const uint8_t *pixels, int32_t label)
{
    (void)pixels;
    (void)label;
    return CTXCONV_TRAIN_E_STATE;
}

ctxconv_train_counters ctxconv_train_get_counters(void)
{
    const ctxconv_train_counters none = {0, 0, 0, 0, 0.0f, 0.0f};
    return none;
}

int8_t ctxconv_train_conv_weight(const ctxconv_train_block *b, int32_t o, int32_t t)
{
    (void)b;
    (void)o;
    (void)t;
    return 0;
}

#endif
