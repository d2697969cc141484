/* @@HEADER@@ replaced by `microgpt export --format c` with what the file is and what was measured */

#ifndef MICROGPT_MODEL_H
#define MICROGPT_MODEL_H

#include <stdint.h>

/* @@CONFIG@@ */

/* The arithmetic: double reproduces the reference engine (and Python's sampling) bit for bit;
   float is what a microcontroller's FPU computes fast. -DMICROGPT_DOUBLE=0 or 1 overrides the
   default (double for --quantize none, float otherwise). */
#ifndef MICROGPT_DOUBLE
#define MICROGPT_DOUBLE MG_DEFAULT_DOUBLE
#endif
#if MICROGPT_DOUBLE
typedef double mg_real;
#else
typedef float mg_real;
#endif

/* Where matmul_forward reads the weights. MICROGPT_UNPACK=1 (the default on a PC) keeps the
   multiplied matrices' values unpacked as mg_real in mg_model, filled by mg_init: converting
   an int8, a float16 or an int4 at every token costs more than the multiply-add it feeds, and
   a PC has the RAM for the copy (4 bytes a weight; 8 in double). A microcontroller has not:
   MICROGPT_UNROLL=1 (the default on a Cortex-M; say so for other such cores, e.g. RISC-V or
   Xtensa microcontrollers) unrolls a panel's loop so that its sums stay in registers, and
   makes MICROGPT_UNPACK default to 0: the weights are read as stored. Both compute the same
   numbers. Build every file that includes this with the same values (mg_model's layout). */
#ifndef MICROGPT_UNROLL
#if defined(__ARM_ARCH_PROFILE) && __ARM_ARCH_PROFILE == 'M'
#define MICROGPT_UNROLL 1
#else
#define MICROGPT_UNROLL 0
#endif
#endif
#ifndef MICROGPT_UNPACK
#define MICROGPT_UNPACK (!MICROGPT_UNROLL)
#endif

#if MICROGPT_UNPACK
#define MG_PADDED(rows) (((rows) + MG_PANEL - 1) / MG_PANEL * MG_PANEL) /* whole panels */
/* The multiplied matrices as matmul_forward reads them: panels of MG_PANEL rows, column by
   column, padded with zero rows (as stored), each value the factor x meets (unpack). */
typedef struct {
    mg_real attn_wq[MG_N_LAYER][MG_PADDED(MG_N_EMBD) * MG_N_EMBD];   /* (C, C) */
    mg_real attn_wk[MG_N_LAYER][MG_PADDED(MG_N_EMBD) * MG_N_EMBD];   /* (C, C) */
    mg_real attn_wv[MG_N_LAYER][MG_PADDED(MG_N_EMBD) * MG_N_EMBD];   /* (C, C) */
    mg_real attn_wo[MG_N_LAYER][MG_PADDED(MG_N_EMBD) * MG_N_EMBD];   /* (C, C) */
    mg_real mlp_fc1[MG_N_LAYER][MG_PADDED(MG_N_HIDDEN) * MG_N_EMBD]; /* (H, C) */
    mg_real mlp_fc2[MG_N_LAYER][MG_PADDED(MG_N_EMBD) * MG_N_HIDDEN]; /* (C, H) */
    mg_real lm_head[MG_PADDED(MG_VOCAB) * MG_N_EMBD];                /* (V, C) */
} mg_unpacked;
#endif

#define MG_MT_N 624 /* words of MT19937's state */

/* Everything that changes while the model runs: the KV cache, the last logits, the random
   stream (and, on a PC, the weights unpacked). The file has no other mutable state; no
   malloc. */
typedef struct {
    mg_real k[MG_N_LAYER][MG_BLOCK_SIZE][MG_N_EMBD]; /* (L, T, C) keys of the positions so far */
    mg_real v[MG_N_LAYER][MG_BLOCK_SIZE][MG_N_EMBD]; /* (L, T, C) their values */
    mg_real logits[MG_VOCAB];    /* (V) scores of the next token, after the last mg_feed */
    int tokens[MG_BLOCK_SIZE];   /* the tokens at positions 0..n-1 */
    int n;                       /* positions in the cache */
    int pending;                 /* a token mg_next drew and has not fed yet, or -1 */
    unsigned long positions;     /* positions computed since mg_init (for tokens/s) */
    uint32_t mt[MG_MT_N];        /* Python's random.Random: MT19937's state... */
    int mti;                     /* ...and the index of its next word */
#if MICROGPT_UNPACK
    mg_unpacked unpacked;        /* the weights, unpacked by mg_init */
#endif
} mg_model;

/* Ready a model (on a PC: unpack its weights; call it before the rest), seed the random
   stream as Python's random.Random(seed) does, and empty the cache. */
void mg_init(mg_model *m, uint32_t seed);
/* Reseed, after mg_init, as random.Random(n) for any integer: key holds |n| in 32-bit words,
   least significant first, without leading zero words (n_words >= 1; n = 0 is one zero word). */
void mg_seed_words(mg_model *m, const uint32_t *key, int n_words);
/* The next number of random.Random.random() in [0, 1) (53 bits; 24 bits in float builds). */
mg_real mg_random(mg_model *m);
/* Empty the KV cache (the random stream goes on). */
void mg_reset(mg_model *m);
/* Append a token (0..MG_VOCAB-1; MG_BOS begins a text): m->logits then score the next one.
   Past MG_BLOCK_SIZE tokens the window slides: the last MG_BLOCK_SIZE are recomputed at
   positions 0.. (microgpt.sample does the same). Returns 0, or -1 for a bad token. */
int mg_feed(mg_model *m, int token);
/* probs = softmax(logits / temperature) over the top_k most likely tokens (top_k <= 0: all;
   ties go to the lower id), in microgpt.sample.probabilities' float operations. */
void mg_probabilities(mg_real *probs, const mg_real *logits, mg_real temperature, int top_k);
/* Draw a token from m->logits as microgpt's sampler does: random.choices over
   mg_probabilities; temperature 0 is greedy (the first most likely token). */
int mg_sample(mg_model *m, mg_real temperature, int top_k);
/* Begin a text: empty the cache, feed MG_BOS and the prompt's token ids. */
void mg_start(mg_model *m, const int *prompt, int n_prompt);
/* The text's next token: feeds the token drawn before (if any), then draws. MG_BOS ends the
   text. Call it up to max-new-tokens times: that is microgpt's sampling loop. */
int mg_next(mg_model *m, mg_real temperature, int top_k);
/* A token's characters (UTF-8, *len bytes; MG_BOS has none). */
const char *mg_token_text(int token, int *len);
/* Token ids of a UTF-8 text, one per character: returns how many, -1 when a character is not
   in the vocabulary (*bad: its byte offset), -2 when there are more than max_ids. */
int mg_encode(int *ids, int max_ids, const char *text, int *bad);

#endif /* MICROGPT_MODEL_H */

#include <math.h>
#include <stddef.h>

/* @@WEIGHTS@@ */

/* A weight matrix as stored: its values (mg_weight each, in the layout its comment in
   mg_param_tensors gives) and, for int8 and int4, one scale per row (a float16 value, kept as
   a float so that reading it costs nothing). */
typedef struct {
    const mg_weight *w;
    const float *scale;
} mg_matrix;

/* Every weight, as the reference's state_dict (R = rows, the output; stored in panels, see
   matmul_forward). C = MG_N_EMBD, H = MG_N_HIDDEN, T = MG_BLOCK_SIZE, V = MG_VOCAB. */
typedef struct {
    mg_matrix wte;                 /* (V, C) token embeddings, row by row */
    mg_matrix wpe;                 /* (T, C) position embeddings, row by row */
    mg_matrix attn_wq[MG_N_LAYER]; /* (C, C) queries, in panels */
    mg_matrix attn_wk[MG_N_LAYER]; /* (C, C) keys */
    mg_matrix attn_wv[MG_N_LAYER]; /* (C, C) values */
    mg_matrix attn_wo[MG_N_LAYER]; /* (C, C) attention output */
    mg_matrix mlp_fc1[MG_N_LAYER]; /* (H, C) MLP up */
    mg_matrix mlp_fc2[MG_N_LAYER]; /* (C, H) MLP down */
    mg_matrix lm_head;             /* (V, C) logits */
} mg_param_tensors;

/* @@PARAMS@@ */

/* ---------------------------------------------------------------------------------------------
   Arithmetic. The reference computes in Python floats: a sum chains left to right from 0, and
   a / b is a * b**-1. Python's ** calls the C library's pow, so the double build does too.
   NOTE: the exponents are read through volatile so that the compiler cannot rewrite
   pow(x, -1) as 1 / x (or pow(x, 2) as x * x): glibc's pow is not correctly rounded, and the
   two differ in about one case in a thousand. */
#if MICROGPT_DOUBLE
static const volatile double mg_minus_one = -1.0, mg_minus_half = -0.5;
#define MG_INV(x) pow((x), mg_minus_one)
#define MG_RSQRT(x) pow((x), mg_minus_half)
#define MG_EXP(x) exp(x)
#if MG_RELU2
static const volatile double mg_two = 2.0;
#define MG_SQUARE(x) pow((x), mg_two)
#endif
#else
#define MG_INV(x) (1 / (x))
#define MG_RSQRT(x) (1 / sqrtf(x))
#define MG_EXP(x) expf(x)
#define MG_SQUARE(x) ((x) * (x))
#endif

/* How the compiler should treat a panel's loop over its rows. Unrolled, the panel's sums stay
   in registers: a microcontroller's, or SIMD lanes when the values are unpacked (GCC -O2
   vectorizes the unrolled rows). A panel column's values as stored on a PC (int8: 16 bytes,
   one SIMD register) GCC vectorizes as written, and unrolling first would get in the way. GCC
   and clang read these pragmas. */
#if !defined(__GNUC__)
#define MG_PANEL_LOOP
#elif MICROGPT_UNROLL || MICROGPT_UNPACK
#define MG_PANEL_LOOP _Pragma("GCC unroll 16") /* MG_PANEL */
#else
#define MG_PANEL_LOOP _Pragma("GCC unroll 1")
#endif

#if MG_QUANT == MG_FLOAT16
/* An IEEE half (a float16 weight) as mg_real, exactly (11 significant bits) */
static mg_real mg_half(uint16_t h)
{
    static const mg_real pow2[32] = { /* pow2[e] = 2**(e - 25) */
        2.98023223876953125e-08, 5.9604644775390625e-08, 1.1920928955078125e-07,
        2.384185791015625e-07, 4.76837158203125e-07, 9.5367431640625e-07, 1.9073486328125e-06,
        3.814697265625e-06, 7.62939453125e-06, 1.52587890625e-05, 3.0517578125e-05,
        6.103515625e-05, 0.0001220703125, 0.000244140625, 0.00048828125, 0.0009765625,
        0.001953125, 0.00390625, 0.0078125, 0.015625, 0.03125, 0.0625, 0.125, 0.25, 0.5,
        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0};
    const int e = (h >> 10) & 31, f = h & 1023;
    const int significand = e ? f + 1024 : f; /* normal : subnormal (and zero) */
    return (mg_real)((h & 0x8000) ? -significand : significand) * pow2[e ? e : 1];
}
#endif

/* The scale of a matrix's row: w = q * scale (int8, int4; a multiplied matrix's scales cover
   its padded rows too); 1 when the values are the weights. */
static mg_real row_scale(const mg_matrix *w, int row)
{
#if MG_QUANT == MG_INT8 || MG_QUANT == MG_INT4
    return (mg_real)w->scale[row];
#else
    (void)w;
    (void)row;
    return 1;
#endif
}

/* Value i of a matrix (in its storage order) before its row's scale: the weight itself (none,
   float16) or the integer q (int8, int4), as mg_real. */
static mg_real value_at(const mg_matrix *w, long i)
{
#if MG_QUANT == MG_NONE
    return (mg_real)w->w[i];
#elif MG_QUANT == MG_FLOAT16
    return mg_half(w->w[i]);
#elif MG_QUANT == MG_INT8
    return (mg_real)w->w[i];
#else /* int4: two per byte, low nibble first, each stored as q + 8 */
    return (mg_real)(((w->w[i >> 1] >> ((i & 1) << 2)) & 15) - 8);
#endif
}

/* ---------------------------------------------------------------------------------------------
   The layers, as llm.c writes them: outputs first, then inputs, then sizes. C = MG_N_EMBD. */

/* out (C) = wte[token] + wpe[pos] */
static void encoder_forward(mg_real *out, int token, int pos)
{
    const mg_real st = row_scale(&mg_params.wte, token), sp = row_scale(&mg_params.wpe, pos);
    int c;
    for (c = 0; c < MG_N_EMBD; c++) {
        out[c] = value_at(&mg_params.wte, (long)token * MG_N_EMBD + c) * st
               + value_at(&mg_params.wpe, (long)pos * MG_N_EMBD + c) * sp;
    }
}

/* out (C) = x * (mean(x**2) + 1e-5)**-0.5; out may be x */
static void rmsnorm_forward(mg_real *out, const mg_real *x)
{
    mg_real ms = 0, scale;
    int i;
    for (i = 0; i < MG_N_EMBD; i++) {
        ms += x[i] * x[i];
    }
    ms = ms * MG_INV_N_EMBD; /* sum / len(x), as the reference divides: times len(x)**-1 */
    scale = MG_RSQRT(ms + (mg_real)1e-5);
    for (i = 0; i < MG_N_EMBD; i++) {
        out[i] = x[i] * scale;
    }
}

/* The number matmul_forward multiplies x by for value i (its row: row) of a multiplied matrix:
   the double build's is the dequantized weight (the reference's number); the float build's
   is q, its row's scale multiplying the row's sum instead (one multiply fewer per weight). */
static mg_real weight_at(const mg_matrix *w, long i, int row)
{
#if MICROGPT_DOUBLE
    return value_at(w, i) * row_scale(w, row);
#else
    (void)row;
    return value_at(w, i);
#endif
}

/* out (rows) = w (rows, cols) @ x (cols), each row summed left to right from 0 as the reference
   sums. The rows are stored in panels of MG_PANEL, column by column (w[r0 + p][c] at
   r0 * cols + c * MG_PANEL + p; the last panel padded with zero rows, and zero scales), so a
   panel's sums advance side by side (SIMD lanes on a PC, registers on a Cortex-M) without
   reordering any row's additions. It reads the values from `unpacked` (MICROGPT_UNPACK: w's
   weight_at numbers, in the same order), else from w as stored. */
static void matmul_forward(mg_real *out, const mg_real *x, const mg_matrix *w,
                           const mg_real *unpacked, int rows, int cols)
{
    mg_real acc[MG_PANEL];
    int r0, p;
#if MICROGPT_UNPACK
    const mg_real *col, *xc;
#else
    int c;
#endif
    (void)w, (void)unpacked; /* a build may read only one of the two */
    for (r0 = 0; r0 < rows; r0 += MG_PANEL) {
        const long at = (long)r0 * cols;
        for (p = 0; p < MG_PANEL; p++) {
            acc[p] = 0;
        }
#if MICROGPT_UNPACK
        /* NOTE: a loop over pointers, not a count of columns: GCC -O2, knowing that cols is a
           multiple of 4 (as every call's is in the names model), would vectorize across 4
           columns, transposing them; unknown, it vectorizes the panel's unrolled rows (the
           names model in int8: 1,280,000 tokens/s this way, 410,000 with the count). */
        for (col = unpacked + at, xc = x; xc < x + cols; col += MG_PANEL, xc++) {
            MG_PANEL_LOOP
            for (p = 0; p < MG_PANEL; p++) {
                acc[p] += col[p] * *xc;
            }
        }
#else
        for (c = 0; c < cols; c++) {
            MG_PANEL_LOOP
            for (p = 0; p < MG_PANEL; p++) {
                acc[p] += weight_at(w, at + (long)c * MG_PANEL + p, r0 + p) * x[c];
            }
        }
#endif
#if !MICROGPT_DOUBLE
        for (p = 0; p < MG_PANEL; p++) {
            acc[p] = acc[p] * row_scale(w, r0 + p);
        }
#endif
        if (r0 + MG_PANEL <= rows) { /* a whole panel: a fixed trip count, vectorized */
            for (p = 0; p < MG_PANEL; p++) {
                out[r0 + p] = acc[p];
            }
        } else { /* the last rows */
            for (p = 0; r0 + p < rows; p++) {
                out[r0 + p] = acc[p];
            }
        }
    }
}

#if MICROGPT_UNPACK
#define UNPACKED(m, field) ((m)->unpacked.field)

/* out = every weight_at number of w (rows, cols), in its stored order (whole panels) */
static void unpack(mg_real *out, const mg_matrix *w, int rows, int cols)
{
    long i;
    for (i = 0; i < (long)MG_PADDED(rows) * cols; i++) {
        out[i] = weight_at(w, i, (int)(i / ((long)MG_PANEL * cols) * MG_PANEL + i % MG_PANEL));
    }
}

static void unpack_all(mg_unpacked *out)
{
    int l;
    for (l = 0; l < MG_N_LAYER; l++) {
        unpack(out->attn_wq[l], &mg_params.attn_wq[l], MG_N_EMBD, MG_N_EMBD);
        unpack(out->attn_wk[l], &mg_params.attn_wk[l], MG_N_EMBD, MG_N_EMBD);
        unpack(out->attn_wv[l], &mg_params.attn_wv[l], MG_N_EMBD, MG_N_EMBD);
        unpack(out->attn_wo[l], &mg_params.attn_wo[l], MG_N_EMBD, MG_N_EMBD);
        unpack(out->mlp_fc1[l], &mg_params.mlp_fc1[l], MG_N_HIDDEN, MG_N_EMBD);
        unpack(out->mlp_fc2[l], &mg_params.mlp_fc2[l], MG_N_EMBD, MG_N_HIDDEN);
    }
    unpack(out->lm_head, &mg_params.lm_head, MG_VOCAB, MG_N_EMBD);
}
#else
#define UNPACKED(m, field) NULL
#endif

/* out (n) = softmax(x (n)): exp(x - max) / sum; out may be x */
static void softmax_forward(mg_real *out, const mg_real *x, int n)
{
    mg_real max_val = x[0], total = 0, inv_total;
    int i;
    for (i = 1; i < n; i++) {
        if (x[i] > max_val) {
            max_val = x[i];
        }
    }
    for (i = 0; i < n; i++) {
        out[i] = MG_EXP(x[i] - max_val);
        total += out[i];
    }
    inv_total = MG_INV(total);
    for (i = 0; i < n; i++) {
        out[i] = out[i] * inv_total;
    }
}

/* out (C) = per head h: softmax(q_h . k_h[t] / sqrt(HS) over t < n) weighting v_h[t] */
static void attention_forward(mg_real *out, const mg_real *q, const mg_real (*k)[MG_N_EMBD],
                              const mg_real (*v)[MG_N_EMBD], int n)
{
    mg_real att[MG_BLOCK_SIZE], dot, sum;
    int h, t, j;
    for (h = 0; h < MG_N_EMBD; h += MG_HEAD_DIM) {
        for (t = 0; t < n; t++) {
            dot = 0;
            for (j = 0; j < MG_HEAD_DIM; j++) {
                dot += q[h + j] * k[t][h + j];
            }
            att[t] = dot * MG_INV_SQRT_HEAD_DIM; /* / head_dim**0.5 */
        }
        softmax_forward(att, att, n);
        for (j = 0; j < MG_HEAD_DIM; j++) {
            sum = 0;
            for (t = 0; t < n; t++) {
                sum += att[t] * v[t][h + j];
            }
            out[h + j] = sum;
        }
    }
}

/* The model at one position: m->logits for the token after `token`; the position's key and
   value go into the cache. The reference's gpt(). */
static void gpt_forward(mg_model *m, int token, int pos)
{
    mg_real x[MG_N_EMBD], xn[MG_N_EMBD], q[MG_N_EMBD], att[MG_N_EMBD], hidden[MG_N_HIDDEN];
    int l, i;
    encoder_forward(x, token, pos);
    rmsnorm_forward(x, x);
    for (l = 0; l < MG_N_LAYER; l++) {
        /* 1) multi-head attention; x stays the residual */
        rmsnorm_forward(xn, x);
        matmul_forward(q, xn, &mg_params.attn_wq[l], UNPACKED(m, attn_wq[l]), MG_N_EMBD, MG_N_EMBD);
        matmul_forward(m->k[l][pos], xn, &mg_params.attn_wk[l], UNPACKED(m, attn_wk[l]), MG_N_EMBD,
                       MG_N_EMBD);
        matmul_forward(m->v[l][pos], xn, &mg_params.attn_wv[l], UNPACKED(m, attn_wv[l]), MG_N_EMBD,
                       MG_N_EMBD);
        attention_forward(att, q, (const mg_real(*)[MG_N_EMBD])m->k[l],
                          (const mg_real(*)[MG_N_EMBD])m->v[l], pos + 1);
        matmul_forward(xn, att, &mg_params.attn_wo[l], UNPACKED(m, attn_wo[l]), MG_N_EMBD,
                       MG_N_EMBD);
        for (i = 0; i < MG_N_EMBD; i++) {
            x[i] = xn[i] + x[i];
        }
        /* 2) MLP */
        rmsnorm_forward(xn, x);
        matmul_forward(hidden, xn, &mg_params.mlp_fc1[l], UNPACKED(m, mlp_fc1[l]), MG_N_HIDDEN,
                       MG_N_EMBD);
        for (i = 0; i < MG_N_HIDDEN; i++) {
            hidden[i] = hidden[i] > 0 ? hidden[i] : 0; /* ReLU */
#if MG_RELU2
            hidden[i] = MG_SQUARE(hidden[i]); /* the first revision squares it */
#endif
        }
        matmul_forward(xn, hidden, &mg_params.mlp_fc2[l], UNPACKED(m, mlp_fc2[l]), MG_N_EMBD,
                       MG_N_HIDDEN);
        for (i = 0; i < MG_N_EMBD; i++) {
            x[i] = xn[i] + x[i];
        }
    }
    matmul_forward(m->logits, x, &mg_params.lm_head, UNPACKED(m, lm_head), MG_VOCAB, MG_N_EMBD);
    m->positions++;
}

/* ---------------------------------------------------------------------------------------------
   Python's random.Random: MT19937 as CPython's Modules/_randommodule.c seeds and draws it. */

static void mt_init_genrand(mg_model *m, uint32_t s)
{
    int i;
    m->mt[0] = s;
    for (i = 1; i < MG_MT_N; i++) {
        m->mt[i] = (uint32_t)(1812433253UL * (m->mt[i - 1] ^ (m->mt[i - 1] >> 30)) + (uint32_t)i);
    }
    m->mti = MG_MT_N;
}

void mg_seed_words(mg_model *m, const uint32_t *key, int n_words)
{
    static const uint32_t zero = 0;
    uint32_t *mt = m->mt;
    int i = 1, j = 0, k;
    if (n_words < 1) {
        key = &zero;
        n_words = 1;
    }
    mt_init_genrand(m, 19650218UL);
    for (k = MG_MT_N > n_words ? MG_MT_N : n_words; k; k--) {
        mt[i] = (uint32_t)((mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1664525UL)) + key[j]
                           + (uint32_t)j);
        i++;
        j++;
        if (i >= MG_MT_N) {
            mt[0] = mt[MG_MT_N - 1];
            i = 1;
        }
        if (j >= n_words) {
            j = 0;
        }
    }
    for (k = MG_MT_N - 1; k; k--) {
        mt[i] = (uint32_t)((mt[i] ^ ((mt[i - 1] ^ (mt[i - 1] >> 30)) * 1566083941UL))
                           - (uint32_t)i);
        i++;
        if (i >= MG_MT_N) {
            mt[0] = mt[MG_MT_N - 1];
            i = 1;
        }
    }
    mt[0] = 0x80000000UL;
}

static uint32_t mt_genrand(mg_model *m)
{
    static const uint32_t mag01[2] = {0, 0x9908b0dfUL};
    uint32_t *mt = m->mt, y;
    int kk;
    if (m->mti >= MG_MT_N) { /* the next 624 words at once */
        for (kk = 0; kk < MG_MT_N - 397; kk++) {
            y = (mt[kk] & 0x80000000UL) | (mt[kk + 1] & 0x7fffffffUL);
            mt[kk] = mt[kk + 397] ^ (y >> 1) ^ mag01[y & 1];
        }
        for (; kk < MG_MT_N - 1; kk++) {
            y = (mt[kk] & 0x80000000UL) | (mt[kk + 1] & 0x7fffffffUL);
            mt[kk] = mt[kk + 397 - MG_MT_N] ^ (y >> 1) ^ mag01[y & 1];
        }
        y = (mt[MG_MT_N - 1] & 0x80000000UL) | (mt[0] & 0x7fffffffUL);
        mt[MG_MT_N - 1] = mt[396] ^ (y >> 1) ^ mag01[y & 1];
        m->mti = 0;
    }
    y = mt[m->mti++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680UL;
    y ^= (y << 15) & 0xefc60000UL;
    y ^= y >> 18;
    return y;
}

mg_real mg_random(mg_model *m)
{
    uint32_t a = mt_genrand(m) >> 5, b;
    b = mt_genrand(m) >> 6;
#if MICROGPT_DOUBLE
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0); /* CPython's random_random */
#else
    (void)b; /* drawn anyway, so the stream of words is Python's */
    return (mg_real)(a >> 3) * (mg_real)(1.0 / 16777216.0); /* 24 bits: below 1 in float */
#endif
}

/* ---------------------------------------------------------------------------------------------
   The embedding API (declared at the top). */

void mg_init(mg_model *m, uint32_t seed)
{
    m->positions = 0;
    mg_seed_words(m, &seed, 1);
#if MICROGPT_UNPACK
    unpack_all(&m->unpacked);
#endif
    mg_reset(m);
}

void mg_reset(mg_model *m)
{
    m->n = 0;
    m->pending = -1;
}

int mg_feed(mg_model *m, int token)
{
    int t;
    if (token < 0 || token >= MG_VOCAB) {
        return -1;
    }
    if (m->n < MG_BLOCK_SIZE) { /* extend the KV cache */
        m->tokens[m->n] = token;
        gpt_forward(m, token, m->n);
        m->n++;
        return 0;
    }
    /* NOTE: past the context the positions restart at 0 over the last MG_BLOCK_SIZE tokens (the
       model never learned a position >= MG_BLOCK_SIZE), so nothing cached can be reused. */
    for (t = 1; t < MG_BLOCK_SIZE; t++) {
        m->tokens[t - 1] = m->tokens[t];
    }
    m->tokens[MG_BLOCK_SIZE - 1] = token;
    for (t = 0; t < MG_BLOCK_SIZE; t++) {
        gpt_forward(m, m->tokens[t], t);
    }
    return 0;
}

void mg_probabilities(mg_real *probs, const mg_real *logits, mg_real temperature, int top_k)
{
    const mg_real inv_t = MG_INV(temperature);
    int i, j, above;
    for (i = 0; i < MG_VOCAB; i++) {
        probs[i] = logits[i] * inv_t;
    }
    for (i = 0; top_k > 0 && top_k < MG_VOCAB && i < MG_VOCAB; i++) {
        for (above = 0, j = 0; j < MG_VOCAB; j++) { /* tokens that rank above i */
            above += logits[j] > logits[i] || (logits[j] == logits[i] && j < i);
        }
        if (above >= top_k) {
            probs[i] = -(mg_real)INFINITY; /* exp(-inf) = 0: cannot be drawn */
        }
    }
    softmax_forward(probs, probs, MG_VOCAB);
}

/* The most likely token (the first one on a tie) */
static int argmax(const mg_real *logits)
{
    int best = 0, i;
    for (i = 1; i < MG_VOCAB; i++) {
        if (logits[i] > logits[best]) {
            best = i;
        }
    }
    return best;
}

int mg_sample(mg_model *m, mg_real temperature, int top_k)
{
    mg_real cum[MG_VOCAB], acc = 0, x;
    int i, lo = 0, hi = MG_VOCAB - 1, mid;
    if (temperature == 0) { /* greedy */
        return argmax(m->logits);
    }
    /* random.choices(range(V), weights=probs): cumulative weights, then
       bisect_right(cum, random() * total, 0, V - 1) */
    mg_probabilities(cum, m->logits, temperature, top_k);
    for (i = 0; i < MG_VOCAB; i++) {
        acc += cum[i];
        cum[i] = acc;
    }
    x = mg_random(m) * cum[MG_VOCAB - 1];
    if (isnan(x)) { /* logits / temperature overflowed (a tiny temperature): greedy */
        return argmax(m->logits);
    }
    while (lo < hi) {
        mid = (lo + hi) / 2;
        if (x < cum[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    return lo;
}

void mg_start(mg_model *m, const int *prompt, int n_prompt)
{
    int i = 1 + n_prompt > MG_BLOCK_SIZE ? 1 + n_prompt - MG_BLOCK_SIZE : 0; /* the window */
    mg_reset(m);
    for (; i < 1 + n_prompt; i++) {
        mg_feed(m, i == 0 ? MG_BOS : prompt[i - 1]);
    }
}

int mg_next(mg_model *m, mg_real temperature, int top_k)
{
    int token;
    if (m->pending >= 0) {
        mg_feed(m, m->pending);
        m->pending = -1;
    }
    token = mg_sample(m, temperature, top_k);
    if (token != MG_BOS) {
        m->pending = token;
    }
    return token;
}

const char *mg_token_text(int token, int *len)
{
    if (token < 0 || token >= MG_BOS) {
        *len = 0;
        return "";
    }
    *len = mg_vocab_at[token + 1] - mg_vocab_at[token];
    return mg_vocab + mg_vocab_at[token];
}

int mg_encode(int *ids, int max_ids, const char *text, int *bad)
{
    int n = 0, at = 0, t, len, i;
    while (text[at]) {
        for (t = 0; t < MG_BOS; t++) { /* the token whose characters come next */
            len = mg_vocab_at[t + 1] - mg_vocab_at[t];
            i = 0;
            while (i < len && text[at + i] && text[at + i] == mg_vocab[mg_vocab_at[t] + i]) {
                i++;
            }
            if (i == len && len > 0) {
                break;
            }
        }
        if (t == MG_BOS) {
            if (bad) {
                *bad = at;
            }
            return -1;
        }
        if (n == max_ids) {
            return -2;
        }
        ids[n++] = t;
        at += len;
    }
    return n;
}

/* ---------------------------------------------------------------------------------------------
   The host's command line: cc -std=c99 -O2 -DMICROGPT_MAIN -o model model.c -lm */
#ifdef MICROGPT_MAIN
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MG_MAX_PROMPT 1024 /* characters of --prompt */
#define MG_SEED_WORDS 32   /* 32-bit words of --seed: up to 1,024 bits */

/* A user's mistake: one line on stderr, exit status 2 */
static void mg_die(const char *prog, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: error: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

static long mg_parse_int(const char *prog, const char *flag, const char *s, long low, long high)
{
    char *end;
    long v = strtol(s, &end, 10);
    if (!*s || *end || v < low || v > high) {
        mg_die(prog, "%s takes an integer from %ld to %ld, got '%s'", flag, low, high, s);
    }
    return v;
}

/* --seed as random.Random(int(s)) takes it: |s| in 32-bit words, least significant first */
static int mg_parse_seed(const char *prog, uint32_t *words, const char *s)
{
    const char *p = s + (*s == '-' || *s == '+');
    int n = 1, i;
    words[0] = 0;
    if (!*p) {
        mg_die(prog, "--seed takes an integer, got '%s'", s);
    }
    for (; *p; p++) {
        uint64_t carry;
        if (*p < '0' || *p > '9') {
            mg_die(prog, "--seed takes an integer, got '%s'", s);
        }
        carry = (uint64_t)(*p - '0');
        for (i = 0; i < n; i++) { /* words = words * 10 + digit */
            carry += (uint64_t)words[i] * 10;
            words[i] = (uint32_t)carry;
            carry >>= 32;
        }
        if (carry) {
            if (n == MG_SEED_WORDS) {
                mg_die(prog, "--seed takes an integer of at most %d bits", 32 * MG_SEED_WORDS);
            }
            words[n++] = (uint32_t)carry;
        }
    }
    return n;
}

/* --logits 26,0,1: a line per token fed, the next token's logits (%.17g: exact) */
static void mg_print_logits(const char *prog, mg_model *m, const char *list)
{
    int ids[MG_BLOCK_SIZE], n = 0, i, v;
    const char *p = list;
    char *end;
    while (*p) {
        long id = strtol(p, &end, 10);
        if (end == p || id < 0 || id >= MG_VOCAB || n == MG_BLOCK_SIZE || (*end && *end != ',')) {
            mg_die(prog, "--logits takes 1 to %d token ids from 0 to %d separated by commas, "
                   "got '%s'", MG_BLOCK_SIZE, MG_VOCAB - 1, list);
        }
        ids[n++] = (int)id;
        p = *end ? end + 1 : end;
    }
    if (n == 0) {
        mg_die(prog, "--logits takes 1 to %d token ids, got none", MG_BLOCK_SIZE);
    }
    mg_reset(m);
    for (i = 0; i < n; i++) {
        mg_feed(m, ids[i]);
        for (v = 0; v < MG_VOCAB; v++) {
            printf(v ? " %.17g" : "%.17g", (double)m->logits[v]);
        }
        putchar('\n');
    }
}

/* --score: stdin holds token id sequences, one per line, of at most MG_BLOCK_SIZE + 1 ids;
   prints the sum of -log p(next token) over every predicted token, and how many there were */
static void mg_score(const char *prog, mg_model *m)
{
    int seq[MG_BLOCK_SIZE + 1], n = 0, c, t, v;
    long id = -1, count = 0, line = 1;
    double total = 0, top, sum;
    do {
        c = getchar();
        if (c >= '0' && c <= '9') {
            id = (id < 0 ? 0 : id * 10) + (c - '0');
            if (id >= MG_VOCAB) {
                mg_die(prog, "--score: line %ld has a token id above %d", line, MG_VOCAB - 1);
            }
            continue;
        }
        if (id >= 0) {
            if (n == MG_BLOCK_SIZE + 1) {
                mg_die(prog, "--score: line %ld has more than %d ids", line, MG_BLOCK_SIZE + 1);
            }
            seq[n++] = (int)id;
            id = -1;
        }
        if (c == '\n' || c == EOF) {
            mg_reset(m);
            for (t = 0; t + 1 < n; t++) { /* log-softmax at the target, in double */
                mg_feed(m, seq[t]);
                for (top = (double)m->logits[0], v = 1; v < MG_VOCAB; v++) {
                    top = (double)m->logits[v] > top ? (double)m->logits[v] : top;
                }
                for (sum = 0, v = 0; v < MG_VOCAB; v++) {
                    sum += exp((double)m->logits[v] - top);
                }
                total -= (double)m->logits[seq[t + 1]] - top - log(sum);
                count++;
            }
            n = 0;
            line++;
        } else if (c != ' ' && c != ',' && c != '\t' && c != '\r') {
            mg_die(prog, "--score: line %ld holds '%c'; give token ids", line, c);
        }
    } while (c != EOF);
    printf("%.17g %ld\n", total, count);
}

int main(int argc, char **argv)
{
    static mg_model model; /* static: a large model's KV cache may not fit the stack */
    const char *prog = argc > 0 && argv[0][0] ? argv[0] : "model";
    mg_model *m = &model;
    uint32_t seed[MG_SEED_WORDS];
    int n_seed = 1, prompt[MG_MAX_PROMPT], n_prompt, score = 0, bad, token, len;
    long num_samples = MG_NUM_SAMPLES, top_k = 0, max_new = MG_BLOCK_SIZE, bench = 0, i, n;
    double temperature = MG_TEMPERATURE;
    const char *prompt_text = "", *logits = NULL, *text;
    static const char *const flags[] = {"--num-samples", "--temperature", "--top-k", "--prompt",
                                        "--max-new-tokens", "--seed", "--logits", "--bench"};
    seed[0] = 42;
    for (i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq = strchr(arg, '='), *value = NULL;
        size_t name_len = eq && !strncmp(arg, "--", 2) ? (size_t)(eq - arg) : strlen(arg);
        char name[32];
        if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
            printf("usage: %s [--num-samples N] [--temperature T] [--top-k K] [--prompt TEXT]\n"
                   "       [--max-new-tokens N] [--seed S] [--logits IDS] [--score] [--bench N]\n"
                   "Samples from the model: by default the training run's number of samples and\n"
                   "temperature, seed 42, every token drawable, at most the context length of new\n"
                   "tokens. --temperature 0 is greedy; --top-k 0 means every token.\n"
                   "--logits 26,0,1 prints the logits after each of the token ids; --score reads\n"
                   "token id sequences from stdin, one per line, and prints their summed loss and\n"
                   "its count; --bench N draws N samples and prints their tokens and CPU time.\n",
                   prog);
            return 0;
        }
        if (strncmp(arg, "--", 2) || name_len >= sizeof name) {
            mg_die(prog, "unrecognized argument '%s' (see --help)", arg);
        }
        memcpy(name, arg, name_len);
        name[name_len] = 0;
        if (!strcmp(name, "--score") && !eq) {
            score = 1;
            continue;
        }
        for (n = 0; n < (long)(sizeof flags / sizeof *flags) && strcmp(name, flags[n]); n++) {
        }
        if (n == (long)(sizeof flags / sizeof *flags)) {
            mg_die(prog, "unrecognized argument '%s' (see --help)", arg);
        }
        if (eq) {
            value = eq + 1;
        } else if (i + 1 < argc) {
            value = argv[++i];
        } else {
            mg_die(prog, "%s needs a value (see --help)", name);
        }
        if (!strcmp(name, "--num-samples")) {
            num_samples = mg_parse_int(prog, name, value, 0, 1000000000L);
        } else if (!strcmp(name, "--top-k")) {
            top_k = mg_parse_int(prog, name, value, 0, 1000000000L);
        } else if (!strcmp(name, "--max-new-tokens")) {
            max_new = mg_parse_int(prog, name, value, 0, 1000000000L);
        } else if (!strcmp(name, "--bench")) {
            bench = mg_parse_int(prog, name, value, 1, 1000000000L);
        } else if (!strcmp(name, "--seed")) {
            n_seed = mg_parse_seed(prog, seed, value);
        } else if (!strcmp(name, "--prompt")) {
            prompt_text = value;
        } else if (!strcmp(name, "--logits")) {
            logits = value;
        } else { /* --temperature */
            char *end;
            temperature = strtod(value, &end);
            if (!*value || *end || !(temperature >= 0 && temperature <= 1e308)) {
                mg_die(prog, "--temperature takes a finite number >= 0, got '%s'", value);
            }
        }
    }
    n_prompt = mg_encode(prompt, MG_MAX_PROMPT, prompt_text, &bad);
    if (n_prompt == -2) {
        mg_die(prog, "--prompt takes at most %d characters", MG_MAX_PROMPT);
    }
    if (n_prompt < 0) {
        mg_die(prog, "--prompt '%s' has a character the model never saw (at byte %d)",
               prompt_text, bad);
    }
    mg_init(m, 0);
    mg_seed_words(m, seed, n_seed);
    if (logits) {
        mg_print_logits(prog, m, logits);
    } else if (score) {
        mg_score(prog, m);
    } else if (bench) { /* the samples' tokens and CPU time, nothing printed between */
        clock_t start = clock();
        for (i = 0; i < bench; i++) {
            mg_start(m, prompt, n_prompt);
            for (n = 0; n < max_new && mg_next(m, (mg_real)temperature, (int)top_k) != MG_BOS;) {
                n++;
            }
        }
        printf("samples %ld tokens %lu seconds %.6f\n", bench, m->positions,
               (double)(clock() - start) / CLOCKS_PER_SEC);
    } else {
        for (i = 0; i < num_samples; i++) { /* microgpt sample's lines */
            printf("sample %2ld: %s", i + 1, prompt_text);
            mg_start(m, prompt, n_prompt);
            for (n = 0; n < max_new; n++) {
                if ((token = mg_next(m, (mg_real)temperature, (int)top_k)) == MG_BOS) {
                    break;
                }
                text = mg_token_text(token, &len);
                fwrite(text, 1, (size_t)len, stdout);
            }
            putchar('\n');
        }
    }
    return 0;
}
#endif /* MICROGPT_MAIN */
