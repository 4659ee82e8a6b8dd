/*
 * xdrop._kernels.host._philox: the host kernels of philox_dropout.c (the one source
 * the GPU also compiles, through NVRTC) as a CPython extension, built at
 * install time by meson-python.
 *
 * Every function is METH_FASTCALL (no argument tuple). Per variant V in
 * "base", "avx2", "avx512" (see variants()):
 *   mask_V(start, n, seed, step, k, out_address)
 *   dropout_f32_V(x_address, out_address, start, n, seed, step, k, scale)   (and _f64_)
 *   dropout_f32_buf_V(x, out, seed, step, k, scale)                         (and _f64_)
 *   attention_f32_V(s, dp, lse, row0, rows, L, S, scale, bias, so, si, sl, ss, inner, causal,
 *                   seed, step, k, a, shared)                               (and _f64_)
 * attention_ runs one block of the attention operator (xd_attn in
 * philox_dropout.c): forward where dp is 0, else backward; bias 0 for none.
 * For avx512 and avx2 (with POSIX threads) also attention_mm_f32_V(q, k, v,
 * dout, out, lse, dq, dk, dv, N, E, Ev, threads, parallel, L, S, ...as
 * attention_ from L): the whole operator, the products included
 * (xd_attn_mm_call in xla_attention.c), and xla_handlers().
 * The address forms release the GIL for large n, so threads run in parallel;
 * the _buf forms take two C-contiguous buffers (NumPy arrays) of the same
 * byte length and spare the caller fetching addresses: per-call cost is what
 * matters for small arrays.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "philox_dropout.c"
#if defined(XD_HAVE_AVX2) && !defined(_WIN32)
#define XD_HAVE_XLA_FFI 1
#include "xla_attention.c"
#endif

/* Below this many elements the GIL is kept: releasing it costs more than the kernel. */
#define XD_RELEASE_MIN 4096

static int xd_u64_arg(PyObject *o, xd_u64 *v) {
    unsigned long long r = PyLong_AsUnsignedLongLong(o);
    if (r == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *v = (xd_u64)r;
    return 0;
}

static int xd_check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t want) {
    if (nargs == want) return 0;
    PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments, got %zd", name, want, nargs);
    return -1;
}

/* args[first .. first + count) as unsigned 64-bit integers. */
static int xd_u64_args(PyObject *const *args, Py_ssize_t first, Py_ssize_t count, xd_u64 *v) {
    for (Py_ssize_t i = 0; i < count; i++)
        if (xd_u64_arg(args[first + i], &v[i]) != 0) return -1;
    return 0;
}

static int xd_address(PyObject *o, void **p) {
    *p = PyLong_AsVoidPtr(o);
    return (*p == NULL && PyErr_Occurred()) ? -1 : 0;
}

static PyObject *xd_block_words_py(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    xd_u64 v[3];
    void *out;
    if (xd_check_nargs("block_words", nargs, 4) || xd_u64_args(args, 0, 3, v) || xd_address(args[3], &out))
        return NULL;
    xd_block_words(v[0], v[1], v[2], (xd_u32 *)out);
    Py_RETURN_NONE;
}

/* The three wrappers of one variant's kernels: SUFFIX names the C functions, NAME the Python ones. */
#define XD_WRAP_VARIANT(SUFFIX)                                                                                  \
    static PyObject *xd_mask_py##SUFFIX(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {              \
        (void)self;                                                                                              \
        xd_u64 v[5];                                                                                             \
        void *out;                                                                                               \
        if (xd_check_nargs("mask", nargs, 6) || xd_u64_args(args, 0, 5, v) || xd_address(args[5], &out))       \
            return NULL;                                                                                         \
        if (v[1] >= XD_RELEASE_MIN) {                                                                            \
            Py_BEGIN_ALLOW_THREADS xd_mask##SUFFIX(v[0], v[1], v[2], v[3], v[4], (unsigned char *)out);          \
            Py_END_ALLOW_THREADS                                                                                 \
        } else {                                                                                                 \
            xd_mask##SUFFIX(v[0], v[1], v[2], v[3], v[4], (unsigned char *)out);                                 \
        }                                                                                                        \
        Py_RETURN_NONE;                                                                                          \
    }                                                                                                            \
    XD_WRAP_DROPOUT(SUFFIX, float, 32)                                                                           \
    XD_WRAP_DROPOUT(SUFFIX, double, 64)

#define XD_WRAP_DROPOUT(SUFFIX, TYPE, BITS)                                                                      \
    static PyObject *xd_dropout_f##BITS##_py##SUFFIX(PyObject *self, PyObject *const *args, Py_ssize_t nargs) { \
        (void)self;                                                                                              \
        void *x, *out;                                                                                           \
        xd_u64 v[5];                                                                                             \
        if (xd_check_nargs("dropout_f" #BITS, nargs, 8) || xd_address(args[0], &x) || xd_address(args[1], &out) \
            || xd_u64_args(args, 2, 5, v))                                                                       \
            return NULL;                                                                                         \
        double scale = PyFloat_AsDouble(args[7]);                                                                \
        if (scale == -1.0 && PyErr_Occurred()) return NULL;                                                     \
        if (v[1] >= XD_RELEASE_MIN) {                                                                            \
            Py_BEGIN_ALLOW_THREADS xd_dropout_f##BITS##SUFFIX((const TYPE *)x, (TYPE *)out, v[0], v[1], v[2],    \
                                                              v[3], v[4], (TYPE)scale);                          \
            Py_END_ALLOW_THREADS                                                                                 \
        } else {                                                                                                 \
            xd_dropout_f##BITS##SUFFIX((const TYPE *)x, (TYPE *)out, v[0], v[1], v[2], v[3], v[4], (TYPE)scale); \
        }                                                                                                        \
        Py_RETURN_NONE;                                                                                          \
    }                                                                                                            \
    static PyObject *xd_dropout_f##BITS##_buf_py##SUFFIX(PyObject *self, PyObject *const *args,                \
                                                          Py_ssize_t nargs) {                                    \
        (void)self;                                                                                              \
        xd_u64 v[3];                                                                                             \
        if (xd_check_nargs("dropout_f" #BITS "_buf", nargs, 6) || xd_u64_args(args, 2, 3, v)) return NULL;      \
        double scale = PyFloat_AsDouble(args[5]);                                                                \
        if (scale == -1.0 && PyErr_Occurred()) return NULL;                                                     \
        Py_buffer bx, bo;                                                                                        \
        if (PyObject_GetBuffer(args[0], &bx, PyBUF_C_CONTIGUOUS) != 0) return NULL;                              \
        if (PyObject_GetBuffer(args[1], &bo, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) != 0) {                        \
            PyBuffer_Release(&bx);                                                                               \
            return NULL;                                                                                         \
        }                                                                                                        \
        PyObject *result = Py_None;                                                                              \
        if (bx.len != bo.len || bx.itemsize != (Py_ssize_t)sizeof(TYPE) || bo.itemsize != bx.itemsize) {        \
            PyErr_Format(PyExc_ValueError,                                                                       \
                         "dropout_f" #BITS "_buf: x and out must be buffers of %zd-byte items and one length, "   \
                         "got %zd and %zd bytes of %zd- and %zd-byte items",                                     \
                         (Py_ssize_t)sizeof(TYPE), bx.len, bo.len, bx.itemsize, bo.itemsize);                    \
            result = NULL;                                                                                       \
        } else {                                                                                                 \
            xd_dropout_f##BITS##SUFFIX((const TYPE *)bx.buf, (TYPE *)bo.buf, 0, (xd_u64)bo.len / sizeof(TYPE),   \
                                       v[0], v[1], v[2], (TYPE)scale);                                           \
        }                                                                                                        \
        PyBuffer_Release(&bo);                                                                                   \
        PyBuffer_Release(&bx);                                                                                   \
        Py_XINCREF(result);                                                                                      \
        return result;                                                                                           \
    }

/* args[first] as a signed 64-bit integer, a double, a truth value. */
static int xd_i64_arg(PyObject *o, int64_t *v) {
    long long r = PyLong_AsLongLong(o);
    if (r == -1 && PyErr_Occurred()) return -1;
    *v = (int64_t)r;
    return 0;
}

static int xd_double_arg(PyObject *o, double *v) {
    *v = PyFloat_AsDouble(o);
    return (*v == -1.0 && PyErr_Occurred()) ? -1 : 0;
}

/* args[0 ..) as xd_attn's fields from L on: (L, S, scale, bias, so, si, sl, ss, inner, causal, seed, step,
 * k, a, shared), the 15 arguments every attention call ends with. */
static int xd_attn_fields(const char *name, PyObject *const *args, xd_attn *p) {
    void *bias;
    if (xd_u64_arg(args[0], &p->length) || xd_u64_arg(args[1], &p->keys) || xd_double_arg(args[2], &p->scale)
        || xd_address(args[3], &bias) || xd_i64_arg(args[4], &p->so) || xd_i64_arg(args[5], &p->si)
        || xd_i64_arg(args[6], &p->sl) || xd_i64_arg(args[7], &p->ss) || xd_u64_arg(args[8], &p->inner)
        || (p->causal = PyObject_IsTrue(args[9])) < 0 || xd_u64_arg(args[10], &p->seed)
        || xd_u64_arg(args[11], &p->step) || xd_u64_arg(args[12], &p->k) || xd_double_arg(args[13], &p->a)
        || (p->shared = PyObject_IsTrue(args[14])) < 0)
        return -1;
    p->bias = bias;
    if (p->length == 0 || p->inner == 0) {
        PyErr_Format(PyExc_ValueError, "%s: L and inner must be positive, got %llu and %llu", name,
                     (unsigned long long)p->length, (unsigned long long)p->inner);
        return -1;
    }
    return 0;
}

/* The block of an attention_ call: (s, dp, lse) addresses and its xd_attn. */
static int xd_attn_args(const char *name, PyObject *const *args, Py_ssize_t nargs, void *buf[3], xd_attn *p) {
    if (xd_check_nargs(name, nargs, 20) || xd_address(args[0], &buf[0]) || xd_address(args[1], &buf[1])
        || xd_address(args[2], &buf[2]) || xd_u64_arg(args[3], &p->row0) || xd_u64_arg(args[4], &p->rows))
        return -1;
    return xd_attn_fields(name, args + 5, p);
}

/* One variant's attention_ wrappers: forward where dp is 0, else backward; the GIL released. */
#define XD_WRAP_ATTENTION(SUFFIX, TYPE, BITS)                                                                    \
    static PyObject *xd_attention_f##BITS##_py##SUFFIX(PyObject *self, PyObject *const *args, Py_ssize_t nargs) { \
        (void)self;                                                                                              \
        void *buf[3];                                                                                            \
        xd_attn p;                                                                                               \
        int rc;                                                                                                  \
        if (xd_attn_args("attention_f" #BITS, args, nargs, buf, &p)) return NULL;                                \
        Py_BEGIN_ALLOW_THREADS if (buf[1] == NULL) rc = xd_attn_fwd_f##BITS##SUFFIX(&p, (TYPE *)buf[0], (TYPE *)buf[2]); \
        else rc = xd_attn_bwd_f##BITS##SUFFIX(&p, (TYPE *)buf[0], (TYPE *)buf[1], (const TYPE *)buf[2]);         \
        Py_END_ALLOW_THREADS if (rc != 0) return PyErr_NoMemory();                                               \
        Py_RETURN_NONE;                                                                                          \
    }

XD_WRAP_VARIANT()
XD_WRAP_ATTENTION(, float, 32)
XD_WRAP_ATTENTION(, double, 64)
#ifdef XD_HAVE_AVX2
XD_WRAP_ATTENTION(_avx2, float, 32)
XD_WRAP_ATTENTION(_avx2, double, 64)
XD_WRAP_ATTENTION(_avx512, float, 32)
XD_WRAP_ATTENTION(_avx512, double, 64)
XD_WRAP_VARIANT(_avx2)
XD_WRAP_VARIANT(_avx512)

#endif

#ifdef XD_HAVE_XLA_FFI
/* attention_mm_f32_V(q, k, v, dout, out, lse, dq, dk, dv, N, E, Ev, threads, parallel, <xd_attn_fields>):
 * the attention operator with xdrop's own products over all N problems (xd_attn_mm_call), forward where
 * dout is 0 (out, lse written), else backward (dq written, dk and dv overwritten); on `threads` threads
 * through the OpenMP entry point at address parallel (0: POSIX threads); the GIL released. V: avx512
 * or avx2. */
static PyObject *xd_attention_mm(PyObject *const *args, Py_ssize_t nargs, int avx512) {
    void *a[9];
    xd_u64 v[4];
    xd_attn p = {0};
    xd_attn_io t = {0};
    void *parallel;
    int rc;
    if (xd_check_nargs("attention_mm_f32", nargs, 29)) return NULL;
    for (int i = 0; i < 9; i++)
        if (xd_address(args[i], &a[i])) return NULL;
    if (xd_u64_args(args, 9, 4, v) || xd_address(args[13], &parallel)
        || xd_attn_fields("attention_mm_f32", args + 14, &p))
        return NULL;
    if (v[0] == 0 || v[1] % 16 || v[2] % 16 || v[1] == 0 || v[2] == 0 || p.keys == 0) {
        PyErr_Format(PyExc_ValueError,
                     "attention_mm_f32: N positive, E and Ev positive multiples of 16 and S positive, got %llu, "
                     "%llu, %llu and %llu",
                     (unsigned long long)v[0], (unsigned long long)v[1], (unsigned long long)v[2],
                     (unsigned long long)p.keys);
        return NULL;
    }
    t.q = (const float *)a[0], t.k = (const float *)a[1], t.v = (const float *)a[2], t.dout = (const float *)a[3];
    t.out = (float *)a[4], t.lse = (float *)a[5], t.dq = (float *)a[6], t.dk = (float *)a[7], t.dv = (float *)a[8];
    t.e = v[1], t.ev = v[2];
    xd_parallel_fn fn;
    memcpy(&fn, &parallel, sizeof fn);
    xd_mm_run_fn run = avx512 ? xd_attn_mm_run_avx512 : xd_attn_mm_run_avx2;
    Py_BEGIN_ALLOW_THREADS rc = xd_attn_mm_call(&p, &t, v[0], v[3], t.dout != NULL, run, fn);
    Py_END_ALLOW_THREADS if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}
static PyObject *xd_attention_mm_py_avx512(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    return xd_attention_mm(args, nargs, 1);
}
static PyObject *xd_attention_mm_py_avx2(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    return xd_attention_mm(args, nargs, 0);
}
#endif

#ifdef XD_HAVE_XLA_FFI
/* xla_handlers(): {name: PyCapsule} of the XLA FFI handlers in xla_attention.c, for jax.ffi's
 * register_ffi_target (names "attention_fwd_V" and "attention_bwd_V", V avx512 or avx2). */
static PyObject *xd_xla_handlers_py(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    struct {
        const char *name;
        void *(*fn)(const xd_ffi_frame *);
    } all[] = {
        {"attention_fwd_avx512", xd_ffi_attention_fwd_avx512},
        {"attention_bwd_avx512", xd_ffi_attention_bwd_avx512},
        {"attention_fwd_avx2", xd_ffi_attention_fwd_avx2},
        {"attention_bwd_avx2", xd_ffi_attention_bwd_avx2},
    };
    PyObject *out = PyDict_New();
    if (out == NULL) return NULL;
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        void *fn;
        memcpy(&fn, &all[i].fn, sizeof fn);
        PyObject *capsule = PyCapsule_New(fn, NULL, NULL);
        if (capsule == NULL || PyDict_SetItemString(out, all[i].name, capsule) != 0) {
            Py_XDECREF(capsule);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(capsule);
    }
    return out;
}
#endif

static PyObject *xd_variants_py(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    int bits = xd_variants();
    /* In order of preference: the first one is the default. */
    PyObject *names = PyList_New(0);
    if (names == NULL) return NULL;
    const char *order[] = {"avx512", "avx2", "base"};
    const int bit[] = {4, 2, 1};
    for (int i = 0; i < 3; i++) {
        if (!(bits & bit[i])) continue;
        PyObject *s = PyUnicode_FromString(order[i]);
        if (s == NULL || PyList_Append(names, s) != 0) {
            Py_XDECREF(s);
            Py_DECREF(names);
            return NULL;
        }
        Py_DECREF(s);
    }
    PyObject *t = PyList_AsTuple(names);
    Py_DECREF(names);
    return t;
}

#define XD_FAST(name, fn, doc) {name, (PyCFunction)(void (*)(void))fn, METH_FASTCALL, doc}
#define XD_METHODS(NAME, SUFFIX)                                                                          \
    XD_FAST("mask" NAME, xd_mask_py##SUFFIX, "Keep flags (0/1 bytes) of flat indices start .. start+n."),  \
        XD_FAST("dropout_f32" NAME, xd_dropout_f32_py##SUFFIX, "Dropout of n float32 at addresses."),     \
        XD_FAST("dropout_f64" NAME, xd_dropout_f64_py##SUFFIX, "Dropout of n float64 at addresses."),     \
        XD_FAST("dropout_f32_buf" NAME, xd_dropout_f32_buf_py##SUFFIX, "Dropout of a float32 buffer."),   \
        XD_FAST("dropout_f64_buf" NAME, xd_dropout_f64_buf_py##SUFFIX, "Dropout of a float64 buffer."),   \
        XD_FAST("attention_f32" NAME, xd_attention_f32_py##SUFFIX, "One float32 block of attention."),     \
        XD_FAST("attention_f64" NAME, xd_attention_f64_py##SUFFIX, "One float64 block of attention.")

static PyMethodDef xd_methods[] = {
    XD_FAST("block_words", xd_block_words_py, "The four Philox words of one block into a uint32[4] at an address."),
    {"variants", xd_variants_py, METH_NOARGS, "The variants this CPU runs (cpuid), best first."},
    XD_METHODS("_base", ),
#ifdef XD_HAVE_AVX2
    XD_METHODS("_avx2", _avx2),
    XD_METHODS("_avx512", _avx512),
#endif
#ifdef XD_HAVE_XLA_FFI
    XD_FAST("attention_mm_f32_avx512", xd_attention_mm_py_avx512, "Float32 attention, own products."),
    XD_FAST("attention_mm_f32_avx2", xd_attention_mm_py_avx2, "Float32 attention, own products."),
    {"xla_handlers", xd_xla_handlers_py, METH_NOARGS, "The XLA FFI handlers of the attention, as PyCapsules."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef xd_module = {
    PyModuleDef_HEAD_INIT, "_philox", "xdrop's compiled host kernels (philox_dropout.c).", -1, xd_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__philox(void) { return PyModule_Create(&xd_module); }
