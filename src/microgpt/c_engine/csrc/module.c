/*
 * The CPython binding of the microgpt core (microgpt.h): a Model type owning an mg_model, and
 * a Cache type owning a KV cache. Thin on purpose: it turns lists of token ids into C arrays,
 * calls the core, and turns the results into Python floats and lists. Sizes and token ids
 * are validated in Python (c_engine/model.py) before they come here; the checks below only
 * make sure that a caller who skipped them gets a ValueError instead of a crash.
 *
 * Compiled twice: as _core64 (double) from this file, and as _core32 (float) by float32.c.
 * The GIL is held throughout: a Model is not safe to share between threads, and holding the
 * GIL makes concurrent calls wait for each other instead of corrupting its buffers.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <string.h>

#include "microgpt.h"

#ifdef MG_FLOAT32
#define MODULE_NAME "_core32"
#define MODULE_INIT PyInit__core32
#else
#define MODULE_NAME "_core64"
#define MODULE_INIT PyInit__core64
#endif

/* A sample's longest generation done in C; longer requests take Python's loop. */
#define MAX_NEW_TOKENS (1 << 20)

typedef struct {
    PyObject_HEAD
    mg_model *model;
    mg_acts *gen;      /* generation's KV cache, made on first use */
    int *tokens;       /* converted batches: every sequence's tokens, one after another */
    int *lens;         /* each sequence's positions (its tokens - 1) */
    int *sizes;        /* each batch's sequences */
    Py_ssize_t tokens_cap, lens_cap, sizes_cap;
} ModelObject;

typedef struct {
    PyObject_HEAD
    mg_config config;
    mg_acts *acts;     /* block_size rows */
} CacheObject;

static PyTypeObject CacheType;

/* --- converting batches --------------------------------------------------------------------- */

static int grow(int **buf, Py_ssize_t *cap, Py_ssize_t need)
{
    if (need <= *cap) return 0;
    Py_ssize_t cap2 = *cap ? *cap : 64;
    while (cap2 < need) cap2 *= 2;
    int *p = PyMem_Realloc(*buf, (size_t)cap2 * sizeof(int));
    if (!p) {
        PyErr_NoMemory();
        return -1;
    }
    *buf = p;
    *cap = cap2;
    return 0;
}

/* Append one batch (a list of token lists) at tokens[*nt], lens[*ns]; -1 with an exception. */
static int add_batch(ModelObject *self, PyObject *batch, Py_ssize_t *nt, Py_ssize_t *ns)
{
    const mg_config *c = &self->model->config;
    if (!PyList_Check(batch) || PyList_GET_SIZE(batch) < 1) {
        PyErr_SetString(PyExc_ValueError, "a batch is a non-empty list of token lists");
        return -1;
    }
    const Py_ssize_t B = PyList_GET_SIZE(batch);
    Py_ssize_t rows = 0;
    if (grow(&self->lens, &self->lens_cap, *ns + B) < 0) return -1;
    for (Py_ssize_t b = 0; b < B; b++) {
        PyObject *seq = PyList_GET_ITEM(batch, b);
        if (!PyList_Check(seq)) {
            PyErr_SetString(PyExc_ValueError, "a sequence is a list of token ids");
            return -1;
        }
        const Py_ssize_t n = PyList_GET_SIZE(seq);
        if (n < 1 || n > (Py_ssize_t)c->block_size + 1) {
            PyErr_Format(PyExc_ValueError, "a sequence of %zd tokens does not fit", n);
            return -1;
        }
        if (grow(&self->tokens, &self->tokens_cap, *nt + n) < 0) return -1;
        for (Py_ssize_t i = 0; i < n; i++) {
            const long id = PyLong_AsLong(PyList_GET_ITEM(seq, i));
            if (id == -1 && PyErr_Occurred()) return -1;
            if (id < 0 || id >= c->vocab_size) {
                PyErr_Format(PyExc_ValueError, "token id %ld is outside the vocabulary", id);
                return -1;
            }
            self->tokens[*nt + i] = (int)id;
        }
        self->lens[(*ns)++] = (int)(n - 1);
        *nt += n;
        rows += n - 1;
    }
    if (rows < 1 || rows > INT_MAX / 2) {
        PyErr_SetString(PyExc_ValueError, "a batch needs 1 to INT_MAX / 2 positions to predict");
        return -1;
    }
    return 0;
}

/* One sequence of 1..block_size token ids into ids (block_size); its length, or -1. */
static int sequence(const mg_config *c, PyObject *tokens, int *ids)
{
    if (!PyList_Check(tokens)) {
        PyErr_SetString(PyExc_ValueError, "tokens is a list of token ids");
        return -1;
    }
    const Py_ssize_t T = PyList_GET_SIZE(tokens);
    if (T < 1 || T > c->block_size) {
        PyErr_Format(PyExc_ValueError, "a sequence of %zd tokens does not fit", T);
        return -1;
    }
    for (Py_ssize_t t = 0; t < T; t++) {
        const long id = PyLong_AsLong(PyList_GET_ITEM(tokens, t));
        if (id == -1 && PyErr_Occurred()) return -1;
        if (id < 0 || id >= c->vocab_size) {
            PyErr_Format(PyExc_ValueError, "token id %ld is outside the vocabulary", id);
            return -1;
        }
        ids[t] = (int)id;
    }
    return (int)T;
}

static PyObject *reals_to_list(const mg_real *x, int n)
{
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *f = PyFloat_FromDouble((double)x[i]);
        if (!f) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, f);
    }
    return list;
}

/* --- Model ---------------------------------------------------------------------------------- */

static int Model_init(ModelObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"n_layer", "n_embd", "n_head", "block_size", "vocab_size", "relu2",
                             "beta1", "beta2", "eps_adam", NULL};
    mg_config c;
    double beta1, beta2, eps;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iiiiipddd", kwlist, &c.n_layer, &c.n_embd,
                                     &c.n_head, &c.block_size, &c.vocab_size, &c.relu2, &beta1,
                                     &beta2, &eps))
        return -1;
    if (mg_config_check(&c) != MG_OK) {
        PyErr_SetString(PyExc_ValueError, "sizes that make no model");
        return -1;
    }
    if (self->model) {
        PyErr_SetString(PyExc_RuntimeError, "a Model is initialised once");
        return -1;
    }
    self->model = mg_model_new(&c, beta1, beta2, eps);
    if (!self->model) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void Model_dealloc(ModelObject *self)
{
    mg_model_free(self->model);
    mg_acts_free(self->gen);
    PyMem_Free(self->tokens);
    PyMem_Free(self->lens);
    PyMem_Free(self->sizes);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(ModelObject *self)
{
    if (!self->model) {
        PyErr_SetString(PyExc_RuntimeError, "the Model was not initialised");
        return -1;
    }
    return 0;
}

static int which_buffer(int which)
{
    if (which < MG_PARAMS || which > MG_ADAM_V) {
        PyErr_SetString(PyExc_ValueError, "which: 0 params, 1 grads, 2 Adam m, 3 Adam v");
        return -1;
    }
    return 0;
}

/* load(which, buffer): a flat float64 buffer in the state_dict's layout */
static PyObject *Model_load(ModelObject *self, PyObject *args)
{
    int which;
    Py_buffer view;
    if (ready(self) < 0 || !PyArg_ParseTuple(args, "iy*", &which, &view)) return NULL;
    PyObject *result = NULL;
    if (which_buffer(which) < 0) goto done;
    if (view.len != (Py_ssize_t)(self->model->num_params * sizeof(double))) {
        PyErr_Format(PyExc_ValueError, "expected %zu float64 values, got %zd bytes",
                     self->model->num_params, view.len);
        goto done;
    }
    if (((uintptr_t)view.buf) % sizeof(double) != 0) {
        PyErr_SetString(PyExc_ValueError, "the buffer is not aligned for float64");
        goto done;
    }
    mg_load(self->model, which, (const double *)view.buf);
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&view);
    return result;
}

/* store(which) -> bytes: a flat float64 buffer in the state_dict's layout */
static PyObject *Model_store(ModelObject *self, PyObject *args)
{
    int which;
    if (ready(self) < 0 || !PyArg_ParseTuple(args, "i", &which) || which_buffer(which) < 0)
        return NULL;
    PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(self->model->num_params
                                                                 * sizeof(double)));
    if (!out) return NULL;
    /* NOTE: a new bytes object's data is aligned for any C type (pymalloc: 16 bytes) */
    mg_store(self->model, which, (double *)PyBytes_AS_STRING(out));
    return out;
}

/* A batch's loss (mg_loss), or its loss with every gradient set (mg_forward_backward). */
static PyObject *loss_call(ModelObject *self, PyObject *batch,
                            int (*run)(mg_model *, const int *, const int *, int, double *))
{
    Py_ssize_t nt = 0, ns = 0;
    double loss;
    if (ready(self) < 0 || add_batch(self, batch, &nt, &ns) < 0) return NULL;
    if (run(self->model, self->tokens, self->lens, (int)ns, &loss) != MG_OK)
        return PyErr_NoMemory();
    return PyFloat_FromDouble(loss);
}

static PyObject *Model_forward_backward(ModelObject *self, PyObject *batch)
{
    return loss_call(self, batch, mg_forward_backward);
}

static PyObject *Model_loss(ModelObject *self, PyObject *batch)
{
    return loss_call(self, batch, mg_loss);
}

static PyObject *Model_adam_step(ModelObject *self, PyObject *args)
{
    double lr;
    int t;
    if (ready(self) < 0 || !PyArg_ParseTuple(args, "di", &lr, &t)) return NULL;
    if (t < 1) {
        PyErr_SetString(PyExc_ValueError, "Adam's step t counts from 1");
        return NULL;
    }
    mg_adam_step(self->model, lr, t);
    Py_RETURN_NONE;
}

/* train_steps(batches, lrs, t0) -> [loss, ...]: see mg_train_steps */
static PyObject *Model_train_steps(ModelObject *self, PyObject *args)
{
    PyObject *batches, *lrs;
    int t0;
    if (ready(self) < 0 || !PyArg_ParseTuple(args, "O!O!i", &PyList_Type, &batches, &PyList_Type,
                                             &lrs, &t0))
        return NULL;
    const Py_ssize_t steps = PyList_GET_SIZE(batches);
    if (PyList_GET_SIZE(lrs) != steps || t0 < 1 || steps > INT_MAX - t0) {
        PyErr_SetString(PyExc_ValueError, "one learning rate per batch, and t0 >= 1");
        return NULL;
    }
    if (grow(&self->sizes, &self->sizes_cap, steps) < 0) return NULL;
    double *rates = PyMem_Malloc((size_t)(2 * steps + 1) * sizeof(double));
    if (!rates) return PyErr_NoMemory();
    double *losses = rates + steps;
    PyObject *result = NULL;
    Py_ssize_t nt = 0, ns = 0;
    for (Py_ssize_t i = 0; i < steps; i++) {
        const Py_ssize_t before = ns;
        if (add_batch(self, PyList_GET_ITEM(batches, i), &nt, &ns) < 0) goto done;
        self->sizes[i] = (int)(ns - before);
        rates[i] = PyFloat_AsDouble(PyList_GET_ITEM(lrs, i));
        if (rates[i] == -1.0 && PyErr_Occurred()) goto done;
    }
    const int done = mg_train_steps(self->model, self->tokens, self->lens, self->sizes,
                                    (int)steps, rates, t0, losses);
    if (done < 0) {
        PyErr_NoMemory();
        goto done;
    }
    result = PyList_New(done);
    if (!result) goto done;
    for (int i = 0; i < done; i++) {
        PyObject *f = PyFloat_FromDouble(losses[i]);
        if (!f) {
            Py_CLEAR(result);
            goto done;
        }
        PyList_SET_ITEM(result, i, f);
    }
done:
    PyMem_Free(rates);
    return result;
}

/* Run one sequence through the model's own activations; NULL with an exception. */
static mg_acts *run_sequence(ModelObject *self, PyObject *tokens)
{
    const mg_config *c = &self->model->config;
    mg_acts *a = mg_model_acts(self->model, c->block_size);
    if (!a) {
        PyErr_NoMemory();
        return NULL;
    }
    const int T = sequence(c, tokens, a->input);
    if (T < 0) return NULL;
    for (int t = 0; t < T; t++) {
        a->pos[t] = t;
        a->first[t] = 0;
    }
    a->n = T;
    mg_forward(self->model, a, 0, T);
    return a;
}

/* forward(tokens) -> logits at every position, [[float] * V] * T */
static PyObject *Model_forward(ModelObject *self, PyObject *tokens)
{
    if (ready(self) < 0) return NULL;
    mg_acts *a = run_sequence(self, tokens);
    if (!a) return NULL;
    const int V = self->model->config.vocab_size;
    PyObject *rows = PyList_New(a->n);
    if (!rows) return NULL;
    for (int t = 0; t < a->n; t++) {
        PyObject *row = reals_to_list(a->logits + (size_t)t * V, V);
        if (!row) {
            Py_DECREF(rows);
            return NULL;
        }
        PyList_SET_ITEM(rows, t, row);
    }
    return rows;
}

/* attention(tokens) -> weights [layer][head][t][s], s <= t */
static PyObject *Model_attention(ModelObject *self, PyObject *tokens)
{
    if (ready(self) < 0) return NULL;
    mg_acts *a = run_sequence(self, tokens);
    if (!a) return NULL;
    const mg_config *c = &self->model->config;
    PyObject *layers = PyList_New(c->n_layer);
    if (!layers) return NULL;
    for (int l = 0; l < c->n_layer; l++) {
        PyObject *heads = PyList_New(c->n_head);
        if (!heads) goto fail;
        PyList_SET_ITEM(layers, l, heads);
        for (int h = 0; h < c->n_head; h++) {
            PyObject *rows = PyList_New(a->n);
            if (!rows) goto fail;
            PyList_SET_ITEM(heads, h, rows);
            for (int t = 0; t < a->n; t++) {
                const mg_real *w = a->layer[l].att + ((size_t)t * c->n_head + h) * c->block_size;
                PyObject *row = reals_to_list(w, t + 1);
                if (!row) goto fail;
                PyList_SET_ITEM(rows, t, row);
            }
        }
    }
    return layers;
fail:
    Py_DECREF(layers);
    return NULL;
}

static PyObject *Model_new_cache(ModelObject *self, PyObject *Py_UNUSED(ignored))
{
    if (ready(self) < 0) return NULL;
    CacheObject *cache = PyObject_New(CacheObject, &CacheType);
    if (!cache) return NULL;
    cache->config = self->model->config;
    cache->acts = mg_acts_new(&cache->config, cache->config.block_size);
    if (!cache->acts) {
        Py_DECREF(cache);
        return PyErr_NoMemory();
    }
    cache->acts->n = 0;
    return (PyObject *)cache;
}

static int same_config(const mg_config *a, const mg_config *b)
{
    return a->n_layer == b->n_layer && a->n_embd == b->n_embd && a->n_head == b->n_head
           && a->block_size == b->block_size && a->vocab_size == b->vocab_size
           && a->relu2 == b->relu2;
}

/* decode(cache, token, pos) -> logits [float] * V */
static PyObject *Model_decode(ModelObject *self, PyObject *args)
{
    CacheObject *cache;
    int token, pos;
    if (ready(self) < 0 || !PyArg_ParseTuple(args, "O!ii", &CacheType, &cache, &token, &pos))
        return NULL;
    const mg_config *c = &self->model->config;
    if (!same_config(&cache->config, c)) {
        PyErr_SetString(PyExc_ValueError, "the cache was made for another model");
        return NULL;
    }
    if (cache->acts->n >= c->block_size || pos < 0 || pos >= c->block_size || token < 0
        || token >= c->vocab_size) {
        PyErr_SetString(PyExc_ValueError, "a token or position outside the model");
        return NULL;
    }
    const mg_real *logits = mg_decode(self->model, cache->acts, token, pos);
    return reals_to_list(logits, c->vocab_size);
}

/* Python's random.getstate()[1] (624 words and an index) <-> mg_rng */
static int rng_from_state(PyObject *state, mg_rng *rng)
{
    if (!PyTuple_Check(state) || PyTuple_GET_SIZE(state) != 625) {
        PyErr_SetString(PyExc_ValueError, "the generator's state is 625 integers");
        return -1;
    }
    for (int i = 0; i < 624; i++) {
        const unsigned long w = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(state, i));
        if (w == (unsigned long)-1 && PyErr_Occurred()) return -1;
        if (w > 0xffffffffUL) {
            PyErr_SetString(PyExc_ValueError, "the generator's state holds 32-bit words");
            return -1;
        }
        rng->mt[i] = (uint32_t)w;
    }
    const long index = PyLong_AsLong(PyTuple_GET_ITEM(state, 624));
    if (index == -1 && PyErr_Occurred()) return -1;
    if (index < 0 || index > 624) {
        PyErr_SetString(PyExc_ValueError, "the generator's index is 0..624");
        return -1;
    }
    rng->index = (int)index;
    return 0;
}

static PyObject *state_from_rng(const mg_rng *rng)
{
    PyObject *state = PyTuple_New(625);
    if (!state) return NULL;
    for (int i = 0; i < 625; i++) {
        PyObject *w = i < 624 ? PyLong_FromUnsignedLong(rng->mt[i]) : PyLong_FromLong(rng->index);
        if (!w) {
            Py_DECREF(state);
            return NULL;
        }
        PyTuple_SET_ITEM(state, i, w);
    }
    return state;
}

static PyObject *sample_tuple(const mg_sample *s)
{
    PyObject *tokens = PyList_New(s->len);
    if (!tokens) return NULL;
    for (int i = 0; i < s->len; i++) {
        PyObject *id = PyLong_FromLong(s->tokens[i]);
        if (!id) {
            Py_DECREF(tokens);
            return NULL;
        }
        PyList_SET_ITEM(tokens, i, id);
    }
    return Py_BuildValue("(NdiO)", tokens, s->logprob, s->predicted,
                         s->ended ? Py_True : Py_False);
}

/* generate(state, count, temperature, top_k, max_new_tokens, prompt, stop_after, bos)
 * -> ([(tokens, logprob, predicted, ended)] * <= count, state): whole samples as
 * sample.generate_sample makes them; fewer than count where Python must take over. */
static PyObject *Model_generate(ModelObject *self, PyObject *args)
{
    PyObject *state, *prompt;
    int count;
    mg_sample_spec spec;
    if (ready(self) < 0
        || !PyArg_ParseTuple(args, "OidiiO!ii", &state, &count, &spec.temperature, &spec.top_k,
                             &spec.max_new_tokens, &PyList_Type, &prompt, &spec.stop_after,
                             &spec.bos))
        return NULL;
    const mg_config *c = &self->model->config;
    if (count < 0 || !(spec.temperature >= 0) || !isfinite(spec.temperature) || spec.top_k < 0
        || spec.max_new_tokens < 0 || spec.max_new_tokens > MAX_NEW_TOKENS || spec.bos < 0
        || spec.bos >= c->vocab_size || PyList_GET_SIZE(prompt) > MAX_NEW_TOKENS) {
        PyErr_SetString(PyExc_ValueError, "sampling options outside what the engine takes");
        return NULL;
    }
    mg_rng rng;
    if (rng_from_state(state, &rng) < 0) return NULL;
    if (!self->gen) {
        self->gen = mg_acts_new(c, c->block_size);
        if (!self->gen) return PyErr_NoMemory();
    }
    spec.prompt_len = (int)PyList_GET_SIZE(prompt);
    int *ids = PyMem_Malloc(((size_t)spec.prompt_len + spec.max_new_tokens + 1) * sizeof(int));
    if (!ids) return PyErr_NoMemory();
    PyObject *samples = PyList_New(0), *result = NULL;
    if (!samples) goto done;
    for (int i = 0; i < spec.prompt_len; i++) {
        const long id = PyLong_AsLong(PyList_GET_ITEM(prompt, i));
        if (id == -1 && PyErr_Occurred()) goto done;
        if (id < 0 || id >= c->vocab_size) {
            PyErr_SetString(PyExc_ValueError, "a prompt token outside the vocabulary");
            goto done;
        }
        ids[i] = (int)id;
    }
    spec.prompt = ids;
    mg_sample s = {.tokens = ids + spec.prompt_len};
    for (int i = 0; i < count; i++) {
        const int rc = mg_generate(self->model, self->gen, &rng, &spec, &s);
        if (rc == MG_ENOMEM) {
            PyErr_NoMemory();
            goto done;
        }
        if (rc != MG_OK) break; /* Python's loop takes over from this sample */
        PyObject *t = sample_tuple(&s);
        if (!t || PyList_Append(samples, t) < 0) {
            Py_XDECREF(t);
            goto done;
        }
        Py_DECREF(t);
    }
    PyObject *new_state = state_from_rng(&rng);
    if (new_state) result = Py_BuildValue("(ON)", samples, new_state);
done:
    PyMem_Free(ids);
    Py_XDECREF(samples);
    return result;
}

static PyObject *Model_num_params(ModelObject *self, void *Py_UNUSED(closure))
{
    if (ready(self) < 0) return NULL;
    return PyLong_FromSize_t(self->model->num_params);
}

static PyObject *Model_nbytes(ModelObject *self, void *Py_UNUSED(closure))
{
    if (ready(self) < 0) return NULL;
    const mg_config *c = &self->model->config;
    size_t n = 4 * self->model->num_params * sizeof(mg_real);
    if (self->model->acts) n += mg_acts_bytes(c, self->model->acts->rows);
    if (self->gen) n += mg_acts_bytes(c, self->gen->rows);
    return PyLong_FromSize_t(n);
}

static PyMethodDef Model_methods[] = {
    {"load", (PyCFunction)Model_load, METH_VARARGS, "load(which, buffer): state_dict layout"},
    {"store", (PyCFunction)Model_store, METH_VARARGS, "store(which) -> bytes: float64"},
    {"forward_backward", (PyCFunction)Model_forward_backward, METH_O, "batch -> loss; grads set"},
    {"loss", (PyCFunction)Model_loss, METH_O, "batch -> loss"},
    {"adam_step", (PyCFunction)Model_adam_step, METH_VARARGS, "adam_step(lr, t)"},
    {"train_steps", (PyCFunction)Model_train_steps, METH_VARARGS,
     "train_steps(batches, lrs, t0) -> losses"},
    {"forward", (PyCFunction)Model_forward, METH_O, "tokens -> logits per position"},
    {"attention", (PyCFunction)Model_attention, METH_O, "tokens -> [layer][head][t][s]"},
    {"new_cache", (PyCFunction)Model_new_cache, METH_NOARGS, "an empty KV cache"},
    {"decode", (PyCFunction)Model_decode, METH_VARARGS, "decode(cache, token, pos) -> logits"},
    {"generate", (PyCFunction)Model_generate, METH_VARARGS,
     "generate(state, count, temperature, top_k, max_new_tokens, prompt, stop_after, bos)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Model_getset[] = {
    {"num_params", (getter)Model_num_params, NULL, "weights in the model", NULL},
    {"nbytes", (getter)Model_nbytes, NULL, "bytes allocated now", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = MODULE_NAME ".Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(n_layer, n_embd, n_head, block_size, vocab_size, relu2, beta1, beta2, "
              "eps_adam): the microgpt core's model",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Model_init,
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
};

/* --- Cache ---------------------------------------------------------------------------------- */

static void Cache_dealloc(CacheObject *self)
{
    mg_acts_free(self->acts);
    PyObject_Free(self);
}

static PyObject *Cache_len(CacheObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->acts->n);
}

static PyGetSetDef Cache_getset[] = {
    {"n", (getter)Cache_len, NULL, "positions decoded", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject CacheType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = MODULE_NAME ".Cache",
    .tp_basicsize = sizeof(CacheObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a KV cache of block_size positions (Model.new_cache)",
    .tp_dealloc = (destructor)Cache_dealloc,
    .tp_getset = Cache_getset,
};

/* --- the module ----------------------------------------------------------------------------- */

/* acts_bytes(n_layer, n_embd, n_head, block_size, vocab_size, rows) -> bytes of activations */
static PyObject *acts_bytes(PyObject *Py_UNUSED(module), PyObject *args)
{
    mg_config c = {0};
    int rows;
    if (!PyArg_ParseTuple(args, "iiiiii", &c.n_layer, &c.n_embd, &c.n_head, &c.block_size,
                          &c.vocab_size, &rows))
        return NULL;
    if (mg_config_check(&c) != MG_OK || rows < 1) {
        PyErr_SetString(PyExc_ValueError, "sizes that make no model");
        return NULL;
    }
    return PyLong_FromSize_t(mg_acts_bytes(&c, rows));
}

static PyMethodDef module_methods[] = {
    {"acts_bytes", acts_bytes, METH_VARARGS, "bytes of the activations of `rows` rows"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, MODULE_NAME,
    "The microgpt C core (" MODULE_NAME "): see c_engine/model.py.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC MODULE_INIT(void)
{
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&CacheType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&ModelType) < 0) {
        Py_DECREF(&ModelType);
        Py_DECREF(m);
        return NULL;
    }
    PyModule_AddIntConstant(m, "REAL_BYTES", (long)sizeof(mg_real));
    return m;
}
