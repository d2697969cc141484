/*
 * microgpt in plain C99: the original microgpt's model, its gradients, Adam, and sampling with
 * Python's own random stream, written as llm.c writes GPT-2. No Python header, no globals:
 * everything lives in an mg_model (weights, gradients, Adam's moments: one flat buffer each)
 * and in mg_acts (the activations of a batch, allocated once for its largest size).
 *
 * The precision is chosen when compiling: mg_real is double by default and float with
 * -DMG_FLOAT32 (microgpt32.c does that). In double, every forward operation is the reference
 * engine's (src/microgpt/ref/model.py), in its order: sums run left to right from 0, Python's
 * `a / b` on a Value is `a * b**-1` (pow(b, -1.0)), `x ** 0.5` is pow(x, 0.5); so the loss,
 * the logits and the samples come out bit for bit the reference's. The backward and Adam
 * agree with it to rounding (about 1e-15 relative). In float, kernels are free to vectorise.
 *
 * Shape letters (as in llm.c and the NumPy engine):
 *   B  sequences in a batch      N  rows: the batch's positions, packed one sequence after
 *   T  positions of a sequence      another (no padding), N = sum of the sequences' lengths
 *   C  channels (n_embd)         V  vocabulary size
 *   NH attention heads           HS head size, C / NH          BS block_size
 *
 * Weights: the state_dict's tensors in its order (wte, wpe, lm_head, then per layer attn_wq,
 * attn_wk, attn_wv, attn_wo, mlp_fc1, mlp_fc2), one after another in one flat buffer. NOTE: a
 * linear layer's matrix is stored transposed, (in, out), where the state_dict has (out, in):
 * the forward then adds each input times a contiguous row of weights into all outputs at
 * once (vectorised across outputs), while each output's own sum still runs over the inputs
 * in the reference's order. mg_load / mg_store convert from / to the state_dict's layout.
 */
#ifndef MICROGPT_H
#define MICROGPT_H

#include <stddef.h>
#include <stdint.h>

#ifdef MG_FLOAT32
typedef float mg_real;
#else
typedef double mg_real;
#endif

/* Error codes of the functions that can fail. */
enum { MG_OK = 0, MG_ENOMEM = 1, MG_EINVAL = 2, MG_ENONFINITE = 3 };

/* The model's sizes. mg_config_check says whether they make a model. */
typedef struct {
    int n_layer;     /* transformer layers */
    int n_embd;      /* C */
    int n_head;      /* NH, dividing C */
    int block_size;  /* BS: positions a sequence may hold */
    int vocab_size;  /* V */
    int relu2;       /* MLP activation: 0 relu (the final revision), 1 relu(x)**2 (the first) */
} mg_config;

/* Which flat buffer mg_load / mg_store copy. */
enum { MG_PARAMS = 0, MG_GRADS = 1, MG_ADAM_M = 2, MG_ADAM_V = 3 };

/* One transformer layer's matrices, pointers into a flat buffer (weights or gradients). */
typedef struct {
    mg_real *attn_wq;  /* (C, C) stored (in, out) */
    mg_real *attn_wk;  /* (C, C) */
    mg_real *attn_wv;  /* (C, C) */
    mg_real *attn_wo;  /* (C, C) */
    mg_real *mlp_fc1;  /* (C, 4C) the state_dict's (4C, C) */
    mg_real *mlp_fc2;  /* (4C, C) the state_dict's (C, 4C) */
} mg_layer_params;

/* Every weight (or every gradient) of the model: views of one flat buffer. */
typedef struct {
    mg_real *wte;            /* (V, C) token embedding, a row per token */
    mg_real *wpe;            /* (BS, C) position embedding, a row per position */
    mg_real *lm_head;        /* (C, V) the state_dict's (V, C) */
    mg_layer_params *layer;  /* n_layer of them */
} mg_params;

/* One layer's activations for N rows, written by the forward and read by the backward. */
typedef struct {
    mg_real *xn1;   /* (N, C) rmsnorm of the layer's input */
    mg_real *rms1;  /* (N) its scale, (ms + 1e-5)**-0.5 */
    mg_real *q;     /* (N, C) */
    mg_real *k;     /* (N, C) */
    mg_real *v;     /* (N, C) */
    mg_real *att;   /* (N, NH, BS) attention weights of row n over its sequence's rows <= n */
    mg_real *atty;  /* (N, C) attention's output, heads side by side */
    mg_real *xo;    /* (N, C) after attention's residual */
    mg_real *xn2;   /* (N, C) rmsnorm before the MLP */
    mg_real *rms2;  /* (N) */
    mg_real *h;     /* (N, 4C) mlp_fc1's output */
    mg_real *a;     /* (N, 4C) relu(h), or relu(h)**2 */
    mg_real *out;   /* (N, C) after the MLP's residual: the next layer's input */
} mg_layer_acts;

/* The activations and the backward's scratch for up to `rows` rows (llm.c's
 * ActivationTensors). A training batch uses rows 0..N-1; a KV cache is an mg_acts of BS rows
 * holding one sequence, decoding row n from the keys and values of rows 0..n-1. */
typedef struct {
    int rows;        /* capacity */
    int n;           /* rows filled (a KV cache's decoded positions) */
    int *input;      /* (rows) the token each row reads */
    int *target;     /* (rows) the token it predicts (training) */
    int *pos;        /* (rows) its position, for wpe */
    int *first;      /* (rows) the first row of its sequence: attention reads rows first..n */
    mg_real *x0;     /* (N, C) wte[token] + wpe[pos] */
    mg_real *norm0;  /* (N, C) rmsnorm of x0: the first layer's input */
    mg_real *rms0;   /* (N) */
    mg_layer_acts *layer;
    mg_real *logits; /* (N, V) logits; the loss turns them into probabilities, then gradients */
    /* the backward's scratch */
    mg_real *dx;     /* (N, C) d loss / d the residual stream */
    mg_real *dnorm;  /* (N, C) d loss / d an rmsnorm's output */
    mg_real *dy;     /* (N, C) d loss / d attention's output */
    mg_real *dq, *dk, *dv;  /* (N, C) each */
    mg_real *dh;     /* (N, 4C) d loss / d the MLP's hidden layer */
    mg_real *datt;   /* (BS) one attention row's d loss / d weights */
    mg_real *mem;    /* the one allocation behind every mg_real array above */
    int *imem;       /* the one allocation behind the int arrays */
} mg_acts;

/* A model: sizes, Adam's constants, the four flat buffers, and a training batch's acts. */
typedef struct {
    mg_config config;
    double beta1, beta2, eps_adam;
    mg_real inv_n_embd; /* C ** -1: rmsnorm's mean, the reference's sum(...) / len(x) */
    mg_real att_scale;  /* (HS ** 0.5) ** -1: the reference's q . k / head_dim**0.5 */
    size_t num_params;
    mg_real *params;  /* (num_params) every weight */
    mg_real *grads;   /* (num_params) d loss / d every weight, set by mg_forward_backward */
    mg_real *m;       /* (num_params) Adam's first moment */
    mg_real *v;       /* (num_params) Adam's second moment */
    mg_real *wt;      /* (num_params) the linear layers' matrices again, as (out, in): the
                         backward reads them so (remade after every change of params) */
    int wt_stale;     /* params changed since wt was made */
    mg_params w;      /* views of params */
    mg_params g;      /* views of grads */
    mg_params t;      /* views of wt (its linear layers; wte and wpe are unused there) */
    mg_acts *acts;    /* a training batch's activations (grown to the largest batch) */
} mg_model;

/* Python's random.Random: MT19937, its 624 words and the index of the next one, as
 * random.getstate() holds them. */
typedef struct {
    uint32_t mt[624];
    int index;
} mg_rng;

/* What a sample asks for (see sample.generate_sample). */
typedef struct {
    double temperature;   /* 0: greedy */
    int top_k;            /* 0: every token may be drawn */
    int max_new_tokens;   /* draws at most */
    const int *prompt;    /* fed after BOS */
    int prompt_len;
    int stop_after;       /* < 0: never; else stop once prompt + sample exceed it */
    int bos;              /* the BOS token id */
} mg_sample_spec;

/* One sample, as sample.Sample holds it. */
typedef struct {
    int *tokens;     /* (max_new_tokens, given by the caller) generated ids, BOS excluded */
    int len;
    double logprob;  /* sum of log p(token) at temperature 1 over every draw */
    int predicted;   /* draws counted in logprob */
    int ended;       /* 1: closed with BOS */
} mg_sample;

/* --- sizes and memory ---------------------------------------------------------------------- */
int mg_config_check(const mg_config *c);
size_t mg_num_params(const mg_config *c);
size_t mg_acts_bytes(const mg_config *c, int rows);
mg_model *mg_model_new(const mg_config *c, double beta1, double beta2, double eps_adam);
void mg_model_free(mg_model *model);
mg_acts *mg_acts_new(const mg_config *c, int rows);
void mg_acts_free(mg_acts *acts);
void mg_load(mg_model *model, int which, const double *src);  /* from the state_dict layout */
void mg_store(const mg_model *model, int which, double *dst);  /* to it */
/* The model's own activations, grown to at least N rows (NULL: out of memory). */
mg_acts *mg_model_acts(mg_model *model, int N);

/* --- the model ----------------------------------------------------------------------------- */
/* Pack B sequences (tokens: each one's len + 1 tokens, one after another) as rows of `acts`. */
void mg_batch(mg_acts *acts, const int *tokens, const int *lens, int B);
/* Rows n0..n1-1 of `acts` through the model (rows before n0 hold earlier positions' keys and
 * values): their logits into acts->logits. */
void mg_forward(const mg_model *model, mg_acts *acts, int n0, int n1);
/* The mean cross-entropy over rows 0..acts->n-1 (after mg_forward); with `grad`, the logits
 * become d loss / d logits. */
double mg_crossentropy(const mg_model *model, mg_acts *acts, int grad);
/* Every gradient of the loss, from d loss / d logits (after mg_crossentropy with grad). */
void mg_backward(mg_model *model, mg_acts *acts);
/* Set the gradients for B sequences; the loss. MG_ENOMEM leaves *loss untouched. */
int mg_forward_backward(mg_model *model, const int *tokens, const int *lens, int B, double *loss);
/* The loss alone (no gradients). */
int mg_loss(mg_model *model, const int *tokens, const int *lens, int B, double *loss);
/* One Adam update (t: 1-based step), then the gradients are zeroed, as the original does. */
void mg_adam_step(mg_model *model, double lr, int t);
/* `steps` training steps: step i trains batch_sizes[i] sequences (taken in order from tokens
 * and lens) with learning rate lrs[i] at Adam step t0 + i. Each loss goes to losses[i]; at the
 * first non-finite loss it stops before that step's update. Returns the losses written. */
int mg_train_steps(mg_model *model, const int *tokens, const int *lens, const int *batch_sizes,
                   int steps, const double *lrs, int t0, double *losses);
/* Feed `token` at position `pos` to a KV cache (an mg_acts of BS rows); its logits (V). */
const mg_real *mg_decode(const mg_model *model, mg_acts *cache, int token, int pos);

/* --- sampling with Python's random stream ------------------------------------------------- */
uint32_t mg_rng_uint32(mg_rng *rng);   /* genrand_uint32 of CPython's _randommodule.c */
double mg_rng_random(mg_rng *rng);     /* random.random() */
/* One sample (sample.generate_sample): MG_OK; MG_ENONFINITE where Python would raise (a weight
 * sum that is not a positive finite number) or could not be followed exactly (NaN logits),
 * with *rng left as it was; MG_ENOMEM. `cache` is an mg_acts of BS rows. */
int mg_generate(const mg_model *model, mg_acts *cache, mg_rng *rng, const mg_sample_spec *spec,
                mg_sample *out);


/* --- exposed for the tests (tests/test_c_engine_kernels.py) ------------------------------- */
/* pow(x, -1.0), pow(x, -0.5), pow(x, 2.0): libm's own results, mostly without calling it */
double mg_pow_minus_one(double x);
double mg_pow_minus_half(double x);
double mg_pow_two(double x);
/* kernels with a plain twin */
void mg_linear_forward_naive(mg_real *out, const mg_real *inp, const mg_real *w, int N, int C,
                             int OC);
void mg_linear_forward(mg_real *out, const mg_real *inp, const mg_real *w, int N, int C, int OC);
void mg_linear_backward_naive(mg_real *dinp, mg_real *dw, const mg_real *dout,
                              const mg_real *inp, const mg_real *wt, int N, int C, int OC);
void mg_linear_backward(mg_real *dinp, mg_real *dw, const mg_real *dout, const mg_real *inp,
                        const mg_real *wt, int N, int C, int OC);

#endif
