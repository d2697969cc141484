/*
 * The microgpt core (see microgpt.h): layers as paired *_forward / *_backward functions with
 * one argument order, as llm.c writes them:
 *
 *     *_forward(outputs..., inputs..., sizes)
 *     *_backward(gradients of the inputs and weights..., dout, what the forward read..., sizes)
 *
 * A backward ADDS into its gradients (the caller zeroes them first), as llm.c's do.
 * Beside each optimised kernel stands its plain version (*_naive), the one to read first;
 * tests/test_c_engine_kernels.py checks every pair agree.
 *
 * Compiled as is for double; microgpt32.c compiles it again with MG_FLOAT32 for float.
 */
#include "microgpt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* --- powers as Python computes them ---------------------------------------------------- */

/* Python's float power is libm's pow (CPython's float_pow calls it for finite operands), so
 * the reference's x ** -1 (every Value division), x ** -0.5 (rmsnorm) and x ** 2 (relu**2)
 * are pow(x, -1.0), pow(x, -0.5) and pow(x, 2.0), which are NOT always the correctly rounded
 * 1 / x, 1 / sqrt(x) and x * x (about 1 in 1,200 random inputs differs in the last bit).
 * pow costs ten times a division, so these take the quick form where it is provably pow's
 * answer: libm's pow is within 0.52 ulp of the exact value (glibc and musl document this
 * bound), so when the exact value lies within 0.47 ulp of a double, that double is the only
 * one pow can return. Otherwise (about 6 in 100 calls) they call pow itself.
 * tests/test_c_engine_kernels.py checks them against Python's ** on a million inputs. */

/* The distance between x and the next double up (x positive, normal); 0 below 2**-970. */
static double ulp_of(double x)
{
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    const uint64_t e = (bits >> 52) & 0x7ff;
    if (e <= 52) return 0;
    bits = (e - 52) << 52;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* pow(x, -1.0): 1 / x (correctly rounded) is r, and 1 - r x is exact (fma), so r's distance
 * from the exact 1 / x is (1 - r x) / x. */
static inline double pow_minus_one(double x)
{
    if (!(x > 0x1p-900 && x < 0x1p900)) return pow(x, -1.0);
    const double r = 1.0 / x, e = fma(-r, x, 1.0);
    return fabs(e) < 0.47 * ulp_of(r) * x ? r : pow(x, -1.0);
}

/* pow(x, -0.5): c = 1 / sqrt(x) (rounded twice), and e = 1 - x c**2 computed exactly enough
 * (c**2 as p + p_lo with fma); the exact value is c (1 - e) ** -0.5 = c (1 + e / 2 + ...). */
static inline double pow_minus_half(double x)
{
    if (!(x > 0x1p-900 && x < 0x1p900)) return pow(x, -0.5);
    const double c = 1.0 / sqrt(x), p = c * c, p_lo = fma(c, c, -p);
    const double e = fma(-x, p, 1.0) - x * p_lo;
    return fabs(0.5 * e) * c < 0.47 * ulp_of(c) ? c : pow(x, -0.5);
}

/* pow(x, 2.0): r = x * x, whose rounding error x * x - r is exact (fma). */
static inline double pow_two(double x)
{
    const double r = x * x;
    if (x == 0) return r;  /* relu's zeros: most of them */
    if (!(fabs(x) > 0x1p-400 && fabs(x) < 0x1p400)) return pow(x, 2.0);
    return fabs(fma(x, x, -r)) < 0.47 * ulp_of(r) ? r : pow(x, 2.0);
}

/* NOTE: the three above are inlined into the kernels that call them, so that in their
 * x86-64-v3 and v4 clones (KERNEL below) fma is one instruction, not a call into libm. */
double mg_pow_minus_one(double x) { return pow_minus_one(x); }
double mg_pow_minus_half(double x) { return pow_minus_half(x); }
double mg_pow_two(double x) { return pow_two(x); }

#ifdef MG_FLOAT32
/* float: no bit-exactness to keep, the plain forms */
static mg_real inverse(mg_real x) { return 1.0f / x; }
static mg_real rsqrt(mg_real x) { return 1.0f / sqrtf(x); }
static mg_real square(mg_real x) { return x * x; }
static mg_real exp_r(mg_real x) { return expf(x); }
static mg_real log_r(mg_real x) { return logf(x); }
static mg_real att_scale(int HS) { return 1.0f / sqrtf((float)HS); }
static mg_real sqrt_r(mg_real x) { return sqrtf(x); }
#else
static mg_real inverse(mg_real x) { return pow_minus_one(x); }
static mg_real rsqrt(mg_real x) { return pow_minus_half(x); }
static mg_real square(mg_real x) { return pow_two(x); }
static mg_real exp_r(mg_real x) { return exp(x); }
static mg_real log_r(mg_real x) { return log(x); }
/* the reference divides by head_dim**0.5: times (head_dim ** 0.5) ** -1 */
static mg_real att_scale(int HS) { return pow(pow((double)HS, 0.5), -1.0); }
static mg_real sqrt_r(mg_real x) { return sqrt(x); }
#endif

/* Optimised kernels are compiled for three x86-64 levels and the CPU picks one at load time
 * (GCC's target_clones); elsewhere, once for the default target. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) \
    && !defined(MG_NO_CLONES)
#define KERNEL __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#else
#define KERNEL
#endif
/* A function inlined into each caller, and so compiled for each of its caller's targets. */
#if defined(__GNUC__)
#define INLINE static inline __attribute__((always_inline))
#else
#define INLINE static inline
#endif

#define RMS_EPS ((mg_real)1e-5)

/* ----------------------------------------------------------------------------------------- */
/* embedding */

/* x0 (N, C) = wte[input[n]] + wpe[pos[n]]: the reference's [t + p for t, p in zip(...)]. */
static void embedding_forward(mg_real *x0, const int *input, const int *pos, const mg_real *wte,
                              const mg_real *wpe, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const mg_real *t = wte + (size_t)input[n] * C, *p = wpe + (size_t)pos[n] * C;
        for (int c = 0; c < C; c++) x0[(size_t)n * C + c] = t[c] + p[c];
    }
}

/* dwte (V, C) and dwpe (BS, C) += each row's gradient dx0 (N, C) at its token and position. */
static void embedding_backward(mg_real *dwte, mg_real *dwpe, const mg_real *dx0, const int *input,
                               const int *pos, int N, int C)
{
    for (int n = 0; n < N; n++) {
        mg_real *t = dwte + (size_t)input[n] * C, *p = dwpe + (size_t)pos[n] * C;
        for (int c = 0; c < C; c++) {
            t[c] += dx0[(size_t)n * C + c];
            p[c] += dx0[(size_t)n * C + c];
        }
    }
}

/* ----------------------------------------------------------------------------------------- */
/* rmsnorm */

/* out (N, C) = inp * s, s = (ms + 1e-5) ** -0.5 with ms = sum(inp**2) / C; rms (N) keeps s.
 * The reference: ms = sum(xi * xi for xi in x) / len(x), where a Value divided by n is
 * times n ** -1: inv_C (mg_model.inv_n_embd). */
static void rmsnorm_forward(mg_real *out, mg_real *rms, const mg_real *inp, int N, int C,
                            mg_real inv_C)
{
    for (int n = 0; n < N; n++) {
        const mg_real *x = inp + (size_t)n * C;
        mg_real sum = 0;
        for (int c = 0; c < C; c++) sum += x[c] * x[c];
        const mg_real s = rsqrt(sum * inv_C + RMS_EPS);
        rms[n] = s;
        for (int c = 0; c < C; c++) out[(size_t)n * C + c] = x[c] * s;
    }
}

/* dinp (N, C) += d out * s - inp * s**3 / C * sum(d out * inp), row by row. */
static void rmsnorm_backward(mg_real *dinp, const mg_real *dout, const mg_real *inp,
                             const mg_real *rms, int N, int C)
{
    for (int n = 0; n < N; n++) {
        const mg_real *x = inp + (size_t)n * C, *d = dout + (size_t)n * C;
        mg_real dot = 0;
        for (int c = 0; c < C; c++) dot += d[c] * x[c];
        const mg_real s = rms[n], k = s * s * s * dot / (mg_real)C;
        for (int c = 0; c < C; c++) dinp[(size_t)n * C + c] += s * d[c] - k * x[c];
    }
}

/* ----------------------------------------------------------------------------------------- */
/* linear: a matrix stored (in, out) */

/* out (N, OC) = inp (N, C) times w (C, OC): each output a sum over c = 0..C-1, in that order,
 * from 0, as the reference's `sum(wi * xi for wi, xi in zip(wo, x))`. The plain version. */
void mg_linear_forward_naive(mg_real *out, const mg_real *inp, const mg_real *w, int N, int C,
                          int OC)
{
    for (int n = 0; n < N; n++) {
        for (int o = 0; o < OC; o++) {
            mg_real sum = 0;
            for (int c = 0; c < C; c++) sum += w[(size_t)c * OC + o] * inp[(size_t)n * C + c];
            out[(size_t)n * OC + o] = sum;
        }
    }
}

/* mg_linear_forward_naive's sums in the same order (so the same numbers, bit for bit), four
 * rows at a time: input c adds its contiguous row of weights, times the input, into the
 * four output rows (vectorised across outputs), two inputs per pass; one row alone takes
 * eight inputs per pass. NOTE: each output's sum is a chain of dependent additions; four
 * rows' chains, and all outputs of a row, run side by side, and the output rows go to
 * memory and back once per pass instead of once per input (measured on the default model's
 * matrices: 3-6x the plain version). */
INLINE void linear_forward(mg_real *restrict out, const mg_real *restrict inp,
                           const mg_real *restrict w, int N, int C, int OC)
{
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const mg_real *x = inp + (size_t)n * C;
        mg_real *y0 = out + (size_t)n * OC, *y1 = y0 + OC, *y2 = y1 + OC, *y3 = y2 + OC;
        for (int o = 0; o < OC; o++) y0[o] = y1[o] = y2[o] = y3[o] = 0;
        int c = 0;
        for (; c + 2 <= C; c += 2) {
            const mg_real *wa = w + (size_t)c * OC, *wb = wa + OC;
            const mg_real a0 = x[c], a1 = x[C + c], a2 = x[2 * C + c], a3 = x[3 * C + c];
            const mg_real b0 = x[c + 1], b1 = x[C + c + 1], b2 = x[2 * C + c + 1],
                          b3 = x[3 * C + c + 1];
            for (int o = 0; o < OC; o++) {
                y0[o] = (y0[o] + wa[o] * a0) + wb[o] * b0;
                y1[o] = (y1[o] + wa[o] * a1) + wb[o] * b1;
                y2[o] = (y2[o] + wa[o] * a2) + wb[o] * b2;
                y3[o] = (y3[o] + wa[o] * a3) + wb[o] * b3;
            }
        }
        for (; c < C; c++) {
            const mg_real *wc = w + (size_t)c * OC;
            const mg_real x0 = x[c], x1 = x[C + c], x2 = x[2 * C + c], x3 = x[3 * C + c];
            for (int o = 0; o < OC; o++) {
                y0[o] += wc[o] * x0;
                y1[o] += wc[o] * x1;
                y2[o] += wc[o] * x2;
                y3[o] += wc[o] * x3;
            }
        }
    }
    for (; n < N; n++) {
        const mg_real *x = inp + (size_t)n * C;
        mg_real *y = out + (size_t)n * OC;
        for (int o = 0; o < OC; o++) y[o] = 0;
        int c = 0;
        for (; c + 8 <= C; c += 8) {
            const mg_real *w0 = w + (size_t)c * OC, *w1 = w0 + OC, *w2 = w1 + OC, *w3 = w2 + OC;
            const mg_real *w4 = w3 + OC, *w5 = w4 + OC, *w6 = w5 + OC, *w7 = w6 + OC;
            const mg_real x0 = x[c], x1 = x[c + 1], x2 = x[c + 2], x3 = x[c + 3];
            const mg_real x4 = x[c + 4], x5 = x[c + 5], x6 = x[c + 6], x7 = x[c + 7];
            for (int o = 0; o < OC; o++) {
                const mg_real lo = (((y[o] + w0[o] * x0) + w1[o] * x1) + w2[o] * x2) + w3[o] * x3;
                y[o] = (((lo + w4[o] * x4) + w5[o] * x5) + w6[o] * x6) + w7[o] * x7;
            }
        }
        for (; c + 4 <= C; c += 4) {
            const mg_real *w0 = w + (size_t)c * OC, *w1 = w0 + OC, *w2 = w1 + OC, *w3 = w2 + OC;
            const mg_real x0 = x[c], x1 = x[c + 1], x2 = x[c + 2], x3 = x[c + 3];
            for (int o = 0; o < OC; o++)
                y[o] = (((y[o] + w0[o] * x0) + w1[o] * x1) + w2[o] * x2) + w3[o] * x3;
        }
        for (; c < C; c++) {
            const mg_real *wc = w + (size_t)c * OC, xc = x[c];
            for (int o = 0; o < OC; o++) y[o] += wc[o] * xc;
        }
    }
}

KERNEL void mg_linear_forward(mg_real *restrict out, const mg_real *restrict inp,
                              const mg_real *restrict w, int N, int C, int OC)
{
    linear_forward(out, inp, w, N, C, OC);
}

/* linear_forward's backward: dinp (N, C) += dout (N, OC) times the matrix, read as wt (OC, C)
 * (the state_dict's own layout: see mg_model.wt); dw (C, OC) += inp transposed times dout.
 * The plain version. */
void mg_linear_backward_naive(mg_real *dinp, mg_real *dw, const mg_real *dout, const mg_real *inp,
                              const mg_real *wt, int N, int C, int OC)
{
    for (int n = 0; n < N; n++) {
        for (int c = 0; c < C; c++) {
            mg_real sum = 0;
            for (int o = 0; o < OC; o++) sum += wt[(size_t)o * C + c] * dout[(size_t)n * OC + o];
            dinp[(size_t)n * C + c] += sum;
        }
    }
    for (int c = 0; c < C; c++) {
        for (int o = 0; o < OC; o++) {
            mg_real sum = 0;
            for (int n = 0; n < N; n++) sum += inp[(size_t)n * C + c] * dout[(size_t)n * OC + o];
            dw[(size_t)c * OC + o] += sum;
        }
    }
}

/* mg_linear_backward_naive as mg_linear_forward is written, four rows at a time: dinp's rows
 * gain each output's row of wt times its gradient (two outputs per pass), dw's rows each
 * input times dout's rows, all contiguous (vectorised); one row alone takes four outputs per
 * pass. The sums run in another order (in pairs): equal to rounding. */
INLINE void linear_backward(mg_real *restrict dinp, mg_real *restrict dw,
                            const mg_real *restrict dout, const mg_real *restrict inp,
                            const mg_real *restrict wt, int N, int C, int OC)
{
    int n = 0;
    for (; n + 4 <= N; n += 4) {
        const mg_real *d0 = dout + (size_t)n * OC, *d1 = d0 + OC, *d2 = d1 + OC, *d3 = d2 + OC;
        mg_real *g0 = dinp + (size_t)n * C, *g1 = g0 + C, *g2 = g1 + C, *g3 = g2 + C;
        int o = 0;
        for (; o + 2 <= OC; o += 2) {
            const mg_real *wa = wt + (size_t)o * C, *wb = wa + C;
            const mg_real a0 = d0[o], a1 = d1[o], a2 = d2[o], a3 = d3[o];
            const mg_real b0 = d0[o + 1], b1 = d1[o + 1], b2 = d2[o + 1], b3 = d3[o + 1];
            for (int c = 0; c < C; c++) {
                g0[c] += wa[c] * a0 + wb[c] * b0;
                g1[c] += wa[c] * a1 + wb[c] * b1;
                g2[c] += wa[c] * a2 + wb[c] * b2;
                g3[c] += wa[c] * a3 + wb[c] * b3;
            }
        }
        for (; o < OC; o++) {
            const mg_real *wo = wt + (size_t)o * C;
            const mg_real e0 = d0[o], e1 = d1[o], e2 = d2[o], e3 = d3[o];
            for (int c = 0; c < C; c++) {
                g0[c] += wo[c] * e0;
                g1[c] += wo[c] * e1;
                g2[c] += wo[c] * e2;
                g3[c] += wo[c] * e3;
            }
        }
        const mg_real *x = inp + (size_t)n * C;
        for (int c = 0; c < C; c++) {
            mg_real *dwc = dw + (size_t)c * OC;
            const mg_real x0 = x[c], x1 = x[C + c], x2 = x[2 * C + c], x3 = x[3 * C + c];
            for (int k = 0; k < OC; k++)
                dwc[k] += (x0 * d0[k] + x1 * d1[k]) + (x2 * d2[k] + x3 * d3[k]);
        }
    }
    for (; n < N; n++) {
        const mg_real *d = dout + (size_t)n * OC;
        mg_real *g = dinp + (size_t)n * C;
        int o = 0;
        for (; o + 4 <= OC; o += 4) {
            const mg_real *w0 = wt + (size_t)o * C, *w1 = w0 + C, *w2 = w1 + C, *w3 = w2 + C;
            const mg_real e0 = d[o], e1 = d[o + 1], e2 = d[o + 2], e3 = d[o + 3];
            for (int c = 0; c < C; c++)
                g[c] += (w0[c] * e0 + w1[c] * e1) + (w2[c] * e2 + w3[c] * e3);
        }
        for (; o < OC; o++) {
            const mg_real *wo = wt + (size_t)o * C, e = d[o];
            for (int c = 0; c < C; c++) g[c] += wo[c] * e;
        }
        for (int c = 0; c < C; c++) {
            mg_real *dwc = dw + (size_t)c * OC;
            const mg_real xc = inp[(size_t)n * C + c];
            for (int k = 0; k < OC; k++) dwc[k] += xc * d[k];
        }
    }
}

KERNEL void mg_linear_backward(mg_real *restrict dinp, mg_real *restrict dw,
                               const mg_real *restrict dout, const mg_real *restrict inp,
                               const mg_real *restrict wt, int N, int C, int OC)
{
    linear_backward(dinp, dw, dout, inp, wt, N, C, OC);
}

/* ----------------------------------------------------------------------------------------- */
/* softmax and attention */

/* probs (n) = softmax(logits (n)) as the reference computes it: the max, exp(x - max), their
 * total summed left to right from 0, then each exp times total ** -1. In place is fine. */
static void softmax_forward(mg_real *probs, const mg_real *logits, int n)
{
    mg_real max = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > max) max = logits[i];
    mg_real total = 0;
    for (int i = 0; i < n; i++) {
        probs[i] = exp_r(logits[i] - max);
        total += probs[i];
    }
    const mg_real inv = inverse(total);
    for (int i = 0; i < n; i++) probs[i] *= inv;
}

/* Causal self-attention of rows n0..n1-1, each over the rows first[n]..n of its sequence.
 * out (N, C): per head, softmax(q . k * scale) times v; att (N, NH, BS) keeps the weights;
 * scale is (HS ** 0.5) ** -1 (mg_model.att_scale).
 * The reference: attn_logits = [sum(q_h[j] * k_h[t][j] for j) / head_dim**0.5 for t],
 * attn_weights = softmax(attn_logits), head_out = [sum(attn_weights[t] * v_h[t][j] for t)]. */
INLINE void attention_forward(mg_real *out, mg_real *att, const mg_real *q, const mg_real *k,
                              const mg_real *v, const int *first, int n0, int n1, int C, int NH,
                              int BS, mg_real scale)
{
    const int HS = C / NH;
    for (int n = n0; n < n1; n++) {
        const int f = first[n], T = n - f + 1;
        const mg_real *qn = q + (size_t)n * C;
        mg_real *wn = att + (size_t)n * NH * BS;  /* (NH, BS) */
        /* every head's logits, a position at a time: its keys are one row */
        for (int t = 0; t < T; t++) {
            const mg_real *kt = k + (size_t)(f + t) * C;
            for (int h = 0; h < NH; h++) {
                mg_real dot = 0;
                for (int j = 0; j < HS; j++) dot += qn[h * HS + j] * kt[h * HS + j];
                wn[h * BS + t] = dot * scale;
            }
        }
        for (int h = 0; h < NH; h++) softmax_forward(wn + h * BS, wn + h * BS, T);
        /* out = sum over t of w[t] v[t], every head at once: a row of values at a time */
        mg_real *on = out + (size_t)n * C;
        for (int c = 0; c < C; c++) on[c] = 0;
        for (int t = 0; t < T; t++) {
            const mg_real *vt = v + (size_t)(f + t) * C;
            for (int h = 0; h < NH; h++) {
                const mg_real wt = wn[h * BS + t];
                for (int j = 0; j < HS; j++) on[h * HS + j] += wt * vt[h * HS + j];
            }
        }
    }
}

/* dq, dk, dv (N, C) += the gradients through attention_forward of rows 0..N-1, given
 * dout (N, C); datt (BS) is scratch. Softmax's backward: d logit = w * (d w - sum(w * d w)). */
INLINE void attention_backward(mg_real *dq, mg_real *dk, mg_real *dv, mg_real *datt,
                                      const mg_real *dout, const mg_real *att, const mg_real *q,
                                      const mg_real *k, const mg_real *v, const int *first,
                                      int N, int C, int NH, int BS, mg_real scale)
{
    const int HS = C / NH;
    for (int n = 0; n < N; n++) {
        const int f = first[n], T = n - f + 1;
        for (int h = 0; h < NH; h++) {
            const mg_real *w = att + ((size_t)n * NH + h) * BS;
            const mg_real *d = dout + (size_t)n * C + h * HS;
            mg_real wdw = 0;  /* sum over t of w * d w */
            for (int t = 0; t < T; t++) {
                const mg_real *vh = v + (size_t)(f + t) * C + h * HS;
                mg_real *dvh = dv + (size_t)(f + t) * C + h * HS;
                mg_real dw = 0;
                for (int j = 0; j < HS; j++) {
                    dw += d[j] * vh[j];
                    dvh[j] += w[t] * d[j];
                }
                datt[t] = dw;
                wdw += w[t] * dw;
            }
            const mg_real *qh = q + (size_t)n * C + h * HS;
            mg_real *dqh = dq + (size_t)n * C + h * HS;
            for (int t = 0; t < T; t++) {
                const mg_real dlogit = w[t] * (datt[t] - wdw) * scale;
                const mg_real *kh = k + (size_t)(f + t) * C + h * HS;
                mg_real *dkh = dk + (size_t)(f + t) * C + h * HS;
                for (int j = 0; j < HS; j++) {
                    dqh[j] += dlogit * kh[j];
                    dkh[j] += dlogit * qh[j];
                }
            }
        }
    }
}

/* ----------------------------------------------------------------------------------------- */
/* the MLP's activation */

/* a (N) = relu(h), the reference's max(0, x); relu2: relu(h) ** 2 (the first revision). */
static void activation_forward(mg_real *a, const mg_real *h, size_t N, int relu2)
{
    for (size_t i = 0; i < N; i++) {
        const mg_real r = h[i] > 0 ? h[i] : 0;
        a[i] = relu2 ? square(r) : r;
    }
}

/* dh (N) = da * relu'(h), or da * 2 relu(h) for relu2; in place (dh == da) is fine. */
static void activation_backward(mg_real *dh, const mg_real *da, const mg_real *h, size_t N,
                                int relu2)
{
    for (size_t i = 0; i < N; i++) {
        const mg_real r = h[i] > 0 ? h[i] : 0;
        dh[i] = relu2 ? da[i] * 2 * r : (h[i] > 0 ? da[i] : 0);
    }
}

/* ----------------------------------------------------------------------------------------- */
/* cross-entropy */

/* The mean over rows 0..N-1 of -log(softmax(logits)[target]), as the reference's
 * `(1 / n) * sum(losses)`; the logits (N, V) become the probabilities, and with `grad`
 * d loss / d logits = (probs - onehot(target)) / N. */
static double crossentropy_forward_backward(mg_real *logits, const int *target, int N, int V,
                                            int grad)
{
    double total = 0;
    for (int n = 0; n < N; n++) {
        mg_real *p = logits + (size_t)n * V;
        softmax_forward(p, p, V);
        total += (double)(-log_r(p[target[n]]));
    }
    if (grad) {
        const mg_real inv_N = (mg_real)(1.0 / N);
        for (int n = 0; n < N; n++) {
            mg_real *p = logits + (size_t)n * V;
            for (int i = 0; i < V; i++) p[i] = (p[i] - (i == target[n] ? 1 : 0)) * inv_N;
        }
    }
    return total * (1.0 / N);
}

/* ----------------------------------------------------------------------------------------- */
/* sizes, the parameter layout, allocation */

int mg_config_check(const mg_config *c)
{
    if (c->n_layer < 1 || c->n_embd < 1 || c->n_head < 1 || c->block_size < 1
        || c->vocab_size < 1 || c->n_embd % c->n_head != 0 || (c->relu2 != 0 && c->relu2 != 1))
        return MG_EINVAL;
    /* every array index must fit an int row count times its width in size_t (checked again,
     * on the actual sizes, by the binding); refuse the absurd up front */
    if (c->n_embd > (1 << 20) || c->vocab_size > (1 << 24) || c->block_size > (1 << 20)
        || c->n_layer > (1 << 12))
        return MG_EINVAL;
    return MG_OK;
}

/* The i-th tensor of the state_dict: its offset in the flat buffer, its state_dict shape
 * (rows, cols) = (out, in), and whether it is stored transposed (a linear layer). */
static void tensor_at(const mg_config *c, int i, size_t *offset, int *rows, int *cols, int *tr)
{
    const size_t C = (size_t)c->n_embd, V = (size_t)c->vocab_size, BS = (size_t)c->block_size;
    const size_t per_layer = 12 * C * C;
    if (i < 3) {
        const size_t off[3] = {0, V * C, V * C + BS * C};
        *offset = off[i];
        *rows = i == 1 ? c->block_size : c->vocab_size;
        *cols = c->n_embd;
        *tr = i == 2;  /* lm_head; wte and wpe are lookup tables, kept (row, C) */
        return;
    }
    const int l = (i - 3) / 6, j = (i - 3) % 6;
    const size_t at[6] = {0, C * C, 2 * C * C, 3 * C * C, 4 * C * C, 8 * C * C};
    *offset = 2 * V * C + BS * C + (size_t)l * per_layer + at[j];
    *rows = j == 4 ? 4 * c->n_embd : c->n_embd;
    *cols = j == 5 ? 4 * c->n_embd : c->n_embd;
    *tr = 1;
}

size_t mg_num_params(const mg_config *c)
{
    const size_t C = (size_t)c->n_embd;
    return 2 * (size_t)c->vocab_size * C + (size_t)c->block_size * C
           + (size_t)c->n_layer * 12 * C * C;
}

static void point_params(mg_params *p, mg_real *base, const mg_config *c)
{
    size_t off;
    int rows, cols, tr;
    tensor_at(c, 0, &off, &rows, &cols, &tr);
    p->wte = base + off;
    tensor_at(c, 1, &off, &rows, &cols, &tr);
    p->wpe = base + off;
    tensor_at(c, 2, &off, &rows, &cols, &tr);
    p->lm_head = base + off;
    for (int l = 0; l < c->n_layer; l++) {
        mg_real **views[6] = {&p->layer[l].attn_wq, &p->layer[l].attn_wk, &p->layer[l].attn_wv,
                              &p->layer[l].attn_wo, &p->layer[l].mlp_fc1, &p->layer[l].mlp_fc2};
        for (int j = 0; j < 6; j++) {
            tensor_at(c, 3 + 6 * l + j, &off, &rows, &cols, &tr);
            *views[j] = base + off;
        }
    }
}

static mg_real *buffer_of(const mg_model *model, int which)
{
    mg_real *const bufs[4] = {model->params, model->grads, model->m, model->v};
    return bufs[which];
}

/* Every tensor between one of the model's buffers (its layout) and a state_dict-layout
 * buffer of doubles: from `in` into `buf` when `in` is given, else from `buf` out to `out`. */
static void copy_tensors(mg_real *buf, const double *in, double *out, const mg_config *c)
{
    for (int i = 0; i < 3 + 6 * c->n_layer; i++) {
        size_t off;
        int rows, cols, tr;
        tensor_at(c, i, &off, &rows, &cols, &tr);
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < cols; k++) {
                const size_t mine = off + (tr ? (size_t)k * rows + r : (size_t)r * cols + k);
                const size_t theirs = off + (size_t)r * cols + k;
                if (in)
                    buf[mine] = (mg_real)in[theirs];
                else
                    out[theirs] = (double)buf[mine];
            }
    }
}

void mg_load(mg_model *model, int which, const double *src)
{
    if (which == MG_PARAMS) model->wt_stale = 1;
    copy_tensors(buffer_of(model, which), src, NULL, &model->config);
}

void mg_store(const mg_model *model, int which, double *dst)
{
    copy_tensors(buffer_of(model, which), NULL, dst, &model->config);
}

/* dst (rows, cols) = src (cols, rows) transposed, in 8 x 8 tiles (measured: twice as quick
 * as the plain double loop on the default model's matrices). */
KERNEL static void transpose(mg_real *restrict dst, const mg_real *restrict src, int rows,
                             int cols)
{
    int r0 = 0;
    for (; r0 + 8 <= rows; r0 += 8) {
        int k0 = 0;
        for (; k0 + 8 <= cols; k0 += 8)
            for (int r = r0; r < r0 + 8; r++)
                for (int k = k0; k < k0 + 8; k++)
                    dst[(size_t)r * cols + k] = src[(size_t)k * rows + r];
        for (int r = r0; r < r0 + 8; r++)
            for (int k = k0; k < cols; k++) dst[(size_t)r * cols + k] = src[(size_t)k * rows + r];
    }
    for (int r = r0; r < rows; r++)
        for (int k = 0; k < cols; k++) dst[(size_t)r * cols + k] = src[(size_t)k * rows + r];
}

/* wt: every linear layer's matrix again, in the state_dict's (out, in) layout, for the
 * backward; remade from params when they changed (mg_load, mg_adam_step). */
static void refresh_transposed(mg_model *model)
{
    const mg_config *c = &model->config;
    for (int i = 2; i < 3 + 6 * c->n_layer; i++) {
        size_t off;
        int rows, cols, tr;
        tensor_at(c, i, &off, &rows, &cols, &tr);
        transpose(model->wt + off, model->params + off, rows, cols);
    }
    model->wt_stale = 0;
}

mg_model *mg_model_new(const mg_config *c, double beta1, double beta2, double eps_adam)
{
    if (mg_config_check(c) != MG_OK) return NULL;
    mg_model *model = calloc(1, sizeof(mg_model));
    if (!model) return NULL;
    model->config = *c;
    model->beta1 = beta1;
    model->beta2 = beta2;
    model->eps_adam = eps_adam;
    const size_t P = mg_num_params(c);
    model->num_params = P;
    model->wt_stale = 1;
    model->inv_n_embd = inverse((mg_real)c->n_embd);
    model->att_scale = att_scale(c->n_embd / c->n_head);
    model->params = calloc(5 * P, sizeof(mg_real));
    model->w.layer = calloc((size_t)c->n_layer, sizeof(mg_layer_params));
    model->g.layer = calloc((size_t)c->n_layer, sizeof(mg_layer_params));
    model->t.layer = calloc((size_t)c->n_layer, sizeof(mg_layer_params));
    if (!model->params || !model->w.layer || !model->g.layer || !model->t.layer) {
        mg_model_free(model);
        return NULL;
    }
    model->grads = model->params + P;
    model->m = model->params + 2 * P;
    model->v = model->params + 3 * P;
    model->wt = model->params + 4 * P;
    point_params(&model->w, model->params, c);
    point_params(&model->g, model->grads, c);
    point_params(&model->t, model->wt, c);
    return model;
}

void mg_model_free(mg_model *model)
{
    if (!model) return;
    mg_acts_free(model->acts);
    free(model->params);
    free(model->w.layer);
    free(model->g.layer);
    free(model->t.layer);
    free(model);
}

/* Lay the activations of `rows` rows out in one buffer: with base == NULL, only count. */
static size_t acts_layout(mg_acts *a, mg_real *base, const mg_config *c, size_t rows)
{
    const size_t C = (size_t)c->n_embd, V = (size_t)c->vocab_size, BS = (size_t)c->block_size;
    const size_t NH = (size_t)c->n_head;
    size_t off = 0;
#define TAKE(field, count)                    \
    do {                                      \
        if (base) (field) = base + off;       \
        off += (count);                       \
    } while (0)
    TAKE(a->x0, rows * C);
    TAKE(a->norm0, rows * C);
    TAKE(a->rms0, rows);
    for (int l = 0; l < c->n_layer; l++) {
        mg_layer_acts *L = base ? &a->layer[l] : NULL;
        mg_layer_acts unused;
        if (!L) L = &unused;
        TAKE(L->xn1, rows * C);
        TAKE(L->rms1, rows);
        TAKE(L->q, rows * C);
        TAKE(L->k, rows * C);
        TAKE(L->v, rows * C);
        TAKE(L->att, rows * NH * BS);
        TAKE(L->atty, rows * C);
        TAKE(L->xo, rows * C);
        TAKE(L->xn2, rows * C);
        TAKE(L->rms2, rows);
        TAKE(L->h, rows * 4 * C);
        TAKE(L->a, rows * 4 * C);
        TAKE(L->out, rows * C);
    }
    TAKE(a->logits, rows * V);
    TAKE(a->dx, rows * C);
    TAKE(a->dnorm, rows * C);
    TAKE(a->dy, rows * C);
    TAKE(a->dq, rows * C);
    TAKE(a->dk, rows * C);
    TAKE(a->dv, rows * C);
    TAKE(a->dh, rows * 4 * C);
    TAKE(a->datt, BS);
#undef TAKE
    return off;
}

size_t mg_acts_bytes(const mg_config *c, int rows)
{
    mg_acts unused;
    return acts_layout(&unused, NULL, c, (size_t)rows) * sizeof(mg_real)
           + 4 * (size_t)rows * sizeof(int) + (size_t)c->n_layer * sizeof(mg_layer_acts);
}

mg_acts *mg_acts_new(const mg_config *c, int rows)
{
    if (rows < 1) return NULL;
    mg_acts *a = calloc(1, sizeof(mg_acts));
    if (!a) return NULL;
    a->rows = rows;
    a->layer = calloc((size_t)c->n_layer, sizeof(mg_layer_acts));
    mg_acts unused;
    a->mem = calloc(acts_layout(&unused, NULL, c, (size_t)rows), sizeof(mg_real));
    a->imem = calloc(4 * (size_t)rows, sizeof(int));
    if (!a->layer || !a->mem || !a->imem) {
        mg_acts_free(a);
        return NULL;
    }
    acts_layout(a, a->mem, c, (size_t)rows);
    a->input = a->imem;
    a->target = a->imem + rows;
    a->pos = a->imem + 2 * (size_t)rows;
    a->first = a->imem + 3 * (size_t)rows;
    return a;
}

void mg_acts_free(mg_acts *a)
{
    if (!a) return;
    free(a->layer);
    free(a->mem);
    free(a->imem);
    free(a);
}

/* The model's training activations, for at least N rows (grown in whole sequences). */
mg_acts *mg_model_acts(mg_model *model, int N)
{
    if (model->acts && model->acts->rows >= N) return model->acts;
    const int BS = model->config.block_size;
    const int rows = (N + BS - 1) / BS * BS;
    mg_acts *a = mg_acts_new(&model->config, rows);
    if (!a) return NULL;
    mg_acts_free(model->acts);
    model->acts = a;
    return a;
}

/* ----------------------------------------------------------------------------------------- */
/* the model */

void mg_batch(mg_acts *a, const int *tokens, const int *lens, int B)
{
    int n = 0;
    for (int b = 0; b < B; b++) {
        for (int t = 0; t < lens[b]; t++) {
            a->input[n + t] = tokens[t];
            a->target[n + t] = tokens[t + 1];
            a->pos[n + t] = t;
            a->first[n + t] = n;
        }
        tokens += lens[b] + 1;
        n += lens[b];
    }
    a->n = n;
}

/* mg_forward with the sizes as arguments (C, NH, V: the config's) */
INLINE void forward_rows(const mg_model *model, mg_acts *a, int n0, int n1, int C, int NH,
                         int V)
{
    const mg_config *c = &model->config;
    const int N = n1 - n0;
    const size_t r0 = (size_t)n0 * C; /* row n0's offset in an (N, C) array */
    embedding_forward(a->x0 + r0, a->input + n0, a->pos + n0, model->w.wte, model->w.wpe, N, C);
    rmsnorm_forward(a->norm0 + r0, a->rms0 + n0, a->x0 + r0, N, C, model->inv_n_embd);
    const mg_real *x = a->norm0;
    for (int l = 0; l < c->n_layer; l++) {
        const mg_layer_params *w = &model->w.layer[l];
        mg_layer_acts *L = &a->layer[l];
        /* 1) multi-head attention */
        rmsnorm_forward(L->xn1 + r0, L->rms1 + n0, x + r0, N, C, model->inv_n_embd);
        linear_forward(L->q + r0, L->xn1 + r0, w->attn_wq, N, C, C);
        linear_forward(L->k + r0, L->xn1 + r0, w->attn_wk, N, C, C);
        linear_forward(L->v + r0, L->xn1 + r0, w->attn_wv, N, C, C);
        attention_forward(L->atty, L->att, L->q, L->k, L->v, a->first, n0, n1, C, NH,
                          c->block_size, model->att_scale);
        linear_forward(L->xo + r0, L->atty + r0, w->attn_wo, N, C, C);
        for (size_t i = r0; i < r0 + (size_t)N * C; i++) L->xo[i] += x[i];  /* residual */
        /* 2) MLP */
        rmsnorm_forward(L->xn2 + r0, L->rms2 + n0, L->xo + r0, N, C, model->inv_n_embd);
        linear_forward(L->h + 4 * r0, L->xn2 + r0, w->mlp_fc1, N, C, 4 * C);
        activation_forward(L->a + 4 * r0, L->h + 4 * r0, 4 * (size_t)N * C, c->relu2);
        linear_forward(L->out + r0, L->a + 4 * r0, w->mlp_fc2, N, 4 * C, C);
        for (size_t i = r0; i < r0 + (size_t)N * C; i++) L->out[i] += L->xo[i];  /* residual */
        x = L->out;
    }
    linear_forward(a->logits + (size_t)n0 * V, x + r0, model->w.lm_head, N, C, V);
}

/* NOTE: a position of the default model (n_embd 16, 4 heads) is a few thousand multiply-adds
 * in loops of 4 to 64 iterations, whose set-up costs as much as their work. So the default
 * width has copies of the forward (one for a single decoded position, one for a batch's rows)
 * and of the backward with those sizes as constants, which the compiler unrolls: the same
 * operations in the same order, the same bits (tests/test_c_engine.py runs that width against
 * the reference engine). Measured (a C harness, min of rounds): a decoded position 25-30%
 * quicker, a float32 training step at batch 16 about 25%. Other widths take the general code. */
KERNEL void mg_forward(const mg_model *model, mg_acts *a, int n0, int n1)
{
    const mg_config *c = &model->config;
    if (n1 - n0 == 1 && c->n_embd == 16 && c->n_head == 4)
        forward_rows(model, a, n0, n0 + 1, 16, 4, c->vocab_size);
    else if (c->n_embd == 16 && c->n_head == 4)
        forward_rows(model, a, n0, n1, 16, 4, c->vocab_size);
    else
        forward_rows(model, a, n0, n1, c->n_embd, c->n_head, c->vocab_size);
}

KERNEL double mg_crossentropy(const mg_model *model, mg_acts *a, int grad)
{
    return crossentropy_forward_backward(a->logits, a->target, a->n, model->config.vocab_size,
                                         grad);
}

/* mg_backward with the sizes as arguments (C, NH, V: the config's) */
INLINE void backward_rows(mg_model *model, mg_acts *a, int C, int NH, int V)
{
    const mg_config *c = &model->config;
    const int N = a->n;
    const size_t NC = (size_t)N * C;
    if (model->wt_stale) refresh_transposed(model);
    memset(model->grads, 0, model->num_params * sizeof(mg_real));
    const mg_real *x_last = a->layer[c->n_layer - 1].out;
    memset(a->dx, 0, NC * sizeof(mg_real));
    linear_backward(a->dx, model->g.lm_head, a->logits, x_last, model->t.lm_head, N, C, V);
    for (int l = c->n_layer - 1; l >= 0; l--) {
        const mg_layer_params *w = &model->t.layer[l], *g = &model->g.layer[l];
        mg_layer_acts *L = &a->layer[l];
        const mg_real *x = l ? a->layer[l - 1].out : a->norm0; /* the layer's input */
        /* 2) MLP: dx reaches xo through the residual and through the MLP */
        memset(a->dh, 0, 4 * NC * sizeof(mg_real));
        linear_backward(a->dh, g->mlp_fc2, a->dx, L->a, w->mlp_fc2, N, 4 * C, C);
        activation_backward(a->dh, a->dh, L->h, 4 * NC, c->relu2);
        memset(a->dnorm, 0, NC * sizeof(mg_real));
        linear_backward(a->dnorm, g->mlp_fc1, a->dh, L->xn2, w->mlp_fc1, N, C, 4 * C);
        rmsnorm_backward(a->dx, a->dnorm, L->xo, L->rms2, N, C);
        /* 1) attention: likewise to the layer's input */
        memset(a->dy, 0, NC * sizeof(mg_real));
        linear_backward(a->dy, g->attn_wo, a->dx, L->atty, w->attn_wo, N, C, C);
        memset(a->dq, 0, NC * sizeof(mg_real));
        memset(a->dk, 0, NC * sizeof(mg_real));
        memset(a->dv, 0, NC * sizeof(mg_real));
        attention_backward(a->dq, a->dk, a->dv, a->datt, a->dy, L->att, L->q, L->k, L->v,
                           a->first, N, C, NH, c->block_size, model->att_scale);
        memset(a->dnorm, 0, NC * sizeof(mg_real));
        linear_backward(a->dnorm, g->attn_wq, a->dq, L->xn1, w->attn_wq, N, C, C);
        linear_backward(a->dnorm, g->attn_wk, a->dk, L->xn1, w->attn_wk, N, C, C);
        linear_backward(a->dnorm, g->attn_wv, a->dv, L->xn1, w->attn_wv, N, C, C);
        rmsnorm_backward(a->dx, a->dnorm, x, L->rms1, N, C);
    }
    /* the first rmsnorm, then the embeddings (dy is free again: d loss / d x0) */
    memset(a->dy, 0, NC * sizeof(mg_real));
    rmsnorm_backward(a->dy, a->dx, a->x0, a->rms0, N, C);
    embedding_backward(model->g.wte, model->g.wpe, a->dy, a->input, a->pos, N, C);
}

/* NOTE: as mg_forward, an unrolled copy for the default width */
KERNEL void mg_backward(mg_model *model, mg_acts *a)
{
    const mg_config *c = &model->config;
    if (c->n_embd == 16 && c->n_head == 4)
        backward_rows(model, a, 16, 4, c->vocab_size);
    else
        backward_rows(model, a, c->n_embd, c->n_head, c->vocab_size);
}

static int batch_rows(const int *lens, int B)
{
    int N = 0;
    for (int b = 0; b < B; b++) N += lens[b];
    return N;
}

/* The loss of B sequences; with grad, every gradient too. */
static int batch_loss(mg_model *model, const int *tokens, const int *lens, int B, double *loss,
                      int grad)
{
    mg_acts *a = mg_model_acts(model, batch_rows(lens, B));
    if (!a) return MG_ENOMEM;
    mg_batch(a, tokens, lens, B);
    mg_forward(model, a, 0, a->n);
    *loss = mg_crossentropy(model, a, grad);
    if (grad) mg_backward(model, a);
    return MG_OK;
}

int mg_forward_backward(mg_model *model, const int *tokens, const int *lens, int B, double *loss)
{
    return batch_loss(model, tokens, lens, B, loss, 1);
}

int mg_loss(mg_model *model, const int *tokens, const int *lens, int B, double *loss)
{
    return batch_loss(model, tokens, lens, B, loss, 0);
}

/* The reference's Adam, element by element over the flat buffers:
 *     m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g**2
 *     p -= lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)) ** 0.5 + eps)
 * NOTE: as the NumPy engine does, dividing by the bias corrections is multiplying by their
 * inverses (lr folded into the first), g**2 is g * g and ** 0.5 is sqrt: the same numbers
 * to a rounding, and a division and a square root per weight instead of three divisions and
 * two pow calls (the divisions and roots are most of this loop's time). */
KERNEL static void adam_update(mg_real *restrict p, mg_real *restrict g, mg_real *restrict m,
                               mg_real *restrict v, size_t P, mg_real lr_t, mg_real inv_bc2,
                               mg_real b1, mg_real b2, mg_real one_b1, mg_real one_b2,
                               mg_real eps)
{
    for (size_t i = 0; i < P; i++) {
        m[i] = b1 * m[i] + one_b1 * g[i];
        v[i] = b2 * v[i] + one_b2 * (g[i] * g[i]);
        p[i] -= lr_t * m[i] / (sqrt_r(v[i] * inv_bc2) + eps);
        g[i] = 0;
    }
}

void mg_adam_step(mg_model *model, double lr, int t)
{
    const double b1 = model->beta1, b2 = model->beta2;
    const double lr_t = lr / (1 - pow(b1, t)), inv_bc2 = 1 / (1 - pow(b2, t));
    adam_update(model->params, model->grads, model->m, model->v, model->num_params,
                (mg_real)lr_t, (mg_real)inv_bc2, (mg_real)b1, (mg_real)b2, (mg_real)(1 - b1),
                (mg_real)(1 - b2), (mg_real)model->eps_adam);
    model->wt_stale = 1;
}

int mg_train_steps(mg_model *model, const int *tokens, const int *lens, const int *batch_sizes,
                   int steps, const double *lrs, int t0, double *losses)
{
    /* the largest batch's activations, once */
    int most = 0;
    for (int i = 0, b = 0; i < steps; b += batch_sizes[i], i++) {
        const int N = batch_rows(lens + b, batch_sizes[i]);
        most = N > most ? N : most;
    }
    if (steps > 0 && !mg_model_acts(model, most)) return -MG_ENOMEM;
    for (int i = 0; i < steps; i++) {
        const int B = batch_sizes[i];
        mg_forward_backward(model, tokens, lens, B, &losses[i]);
        if (!isfinite(losses[i])) return i + 1;  /* no update: the weights stay the last good */
        mg_adam_step(model, lrs[i], t0 + i);
        for (int b = 0; b < B; b++) tokens += lens[b] + 1;
        lens += B;
    }
    return steps;
}

const mg_real *mg_decode(const mg_model *model, mg_acts *cache, int token, int pos)
{
    const int n = cache->n;
    if (n >= cache->rows) return NULL;
    cache->input[n] = token;
    cache->pos[n] = pos;
    cache->first[n] = 0;
    mg_forward(model, cache, n, n + 1);
    cache->n = n + 1;
    return cache->logits + (size_t)n * model->config.vocab_size;
}

/* ----------------------------------------------------------------------------------------- */
/* Python's random stream: CPython's Modules/_randommodule.c and Lib/random.py */

uint32_t mg_rng_uint32(mg_rng *rng)
{
    enum { N = 624, M = 397 };
    static const uint32_t mag01[2] = {0x0U, 0x9908b0dfU}; /* the matrix A */
    const uint32_t upper = 0x80000000U, lower = 0x7fffffffU;
    uint32_t *mt = rng->mt, y;
    if (rng->index >= N) { /* the next N words at once */
        int kk;
        for (kk = 0; kk < N - M; kk++) {
            y = (mt[kk] & upper) | (mt[kk + 1] & lower);
            mt[kk] = mt[kk + M] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        for (; kk < N - 1; kk++) {
            y = (mt[kk] & upper) | (mt[kk + 1] & lower);
            mt[kk] = mt[kk + (M - N)] ^ (y >> 1) ^ mag01[y & 0x1U];
        }
        y = (mt[N - 1] & upper) | (mt[0] & lower);
        mt[N - 1] = mt[M - 1] ^ (y >> 1) ^ mag01[y & 0x1U];
        rng->index = 0;
    }
    y = mt[rng->index++];
    y ^= (y >> 11); /* tempering */
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
}

double mg_rng_random(mg_rng *rng)
{
    /* 53 random bits: 27 from one word and 26 from the next, as random_random() */
    const uint32_t a = mg_rng_uint32(rng) >> 5, b = mg_rng_uint32(rng) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

/* random.Random.choices(range(n), weights=w)[0]: the cumulative weights (itertools.accumulate:
 * left to right, from the first), random() * their total, then bisect_right(cum, x, 0, n - 1).
 * -1 where Python raises (a total that is not a finite number > 0); cum (n) is scratch. */
static int choices(mg_rng *rng, const double *w, double *cum, int n)
{
    cum[0] = w[0];
    for (int i = 1; i < n; i++) cum[i] = cum[i - 1] + w[i];
    const double total = cum[n - 1] + 0.0;
    if (!(total > 0.0) || !isfinite(total)) return -1;
    const double x = mg_rng_random(rng) * total;
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        const int mid = (lo + hi) / 2; /* lo + hi < n: no overflow */
        if (x < cum[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* sample.probabilities: softmax(logits / temperature) in the original's order: each logit
 * times inv_t = temperature ** -1, the max, exp(s - max), a left-to-right total from 0,
 * times total ** -1. Always in double, whatever mg_real is, as Python computes it. */
static void probabilities(double *probs, const double *logits, int n, double inv_t)
{
    double max = logits[0] * inv_t;
    for (int i = 1; i < n; i++)
        if (logits[i] * inv_t > max) max = logits[i] * inv_t;
    double total = 0;
    for (int i = 0; i < n; i++) {
        probs[i] = exp(logits[i] * inv_t - max);
        total = total + probs[i];
    }
    const double inv_total = pow_minus_one(total);
    for (int i = 0; i < n; i++) probs[i] = probs[i] * inv_total;
}

/* sample.log_softmax_at: log p(token) at temperature 1, in nats. */
static double log_softmax_at(const double *logits, int n, int token)
{
    double top = logits[0];
    for (int i = 1; i < n; i++)
        if (logits[i] > top) top = logits[i];
    double total = 0;
    for (int i = 0; i < n; i++) total = total + exp(logits[i] - top);
    return logits[token] - top - log(total);
}

typedef struct {
    double value;
    int index;
} ranked;

/* sorted by (-value, index): the largest first, ties to the lower index */
static int by_rank(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->value != b->value) return a->value > b->value ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

/* sample.top_k_logits: all but the k largest logits set to -inf (ties: lower index kept).
 * out (n); rank (n) is scratch. */
static void top_k_logits(double *out, const double *logits, ranked *rank, int n, int k)
{
    for (int i = 0; i < n; i++) rank[i] = (ranked){logits[i], i};
    qsort(rank, (size_t)n, sizeof(ranked), by_rank);
    for (int i = 0; i < n; i++) out[i] = -INFINITY;
    for (int i = 0; i < k && i < n; i++) out[rank[i].index] = logits[rank[i].index];
}

int mg_generate(const mg_model *model, mg_acts *cache, mg_rng *rng, const mg_sample_spec *spec,
                mg_sample *out)
{
    const int BS = model->config.block_size, V = model->config.vocab_size;
    const mg_rng saved = *rng;
    const double inv_t = spec->temperature > 0 ? pow(spec->temperature, -1.0) : 0;
    int *context = malloc(((size_t)1 + spec->prompt_len + spec->max_new_tokens) * sizeof(int));
    double *logits = malloc(3 * (size_t)V * sizeof(double)); /* logits, weights, probs */
    ranked *rank = malloc((size_t)V * sizeof(ranked));
    if (!context || !logits || !rank) {
        free(context);
        free(logits);
        free(rank);
        return MG_ENOMEM;
    }
    double *weights = logits + V, *probs = logits + 2 * V;
    int len = 0, rc = MG_OK;
    context[len++] = spec->bos;
    for (int i = 0; i < spec->prompt_len; i++) context[len++] = spec->prompt[i];
    out->len = 0;
    out->logprob = 0;
    out->predicted = 0;
    out->ended = 0;
    cache->n = 0;
    int fed = 0; /* tokens of context in the KV cache */
    for (int step = 0; step < spec->max_new_tokens; step++) {
        const mg_real *row = NULL;
        if (len <= BS) { /* the original's path: extend the KV cache */
            while (fed < len) {
                row = mg_decode(model, cache, context[fed], fed);
                fed++;
            }
        } else { /* past the context: the last BS tokens at positions 0..BS-1, recomputed */
            for (int t = 0; t < BS; t++) {
                cache->input[t] = context[len - BS + t];
                cache->pos[t] = t;
                cache->first[t] = 0;
            }
            mg_forward(model, cache, 0, BS);
            cache->n = BS;
            row = cache->logits + (size_t)(BS - 1) * V;
        }
        for (int i = 0; i < V; i++) logits[i] = (double)row[i];
        for (int i = 0; i < V; i++) /* Python's max and sort on NaN: left to Python */
            if (!isfinite(logits[i])) rc = MG_ENONFINITE;
        if (rc != MG_OK) break;
        int token = 0;
        if (spec->temperature == 0) { /* greedy: the first of the largest */
            for (int i = 1; i < V; i++)
                if (logits[i] > logits[token]) token = i;
        } else {
            const double *w = logits;
            if (spec->top_k > 0 && spec->top_k < V) {
                top_k_logits(weights, logits, rank, V, spec->top_k);
                w = weights;
            }
            probabilities(probs, w, V, inv_t);
            token = choices(rng, probs, weights, V);
            if (token < 0) {
                rc = MG_ENONFINITE;
                break;
            }
        }
        out->logprob += log_softmax_at(logits, V, token);
        out->predicted++;
        if (token == spec->bos) {
            out->ended = 1;
            break;
        }
        out->tokens[out->len++] = token;
        context[len++] = token;
        if (spec->stop_after >= 0 && spec->prompt_len + out->len > spec->stop_after) break;
    }
    if (rc != MG_OK) *rng = saved;
    free(context);
    free(logits);
    free(rank);
    return rc;
}
