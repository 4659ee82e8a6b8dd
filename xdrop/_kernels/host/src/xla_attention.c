/*
 * One call of the own-products attention (xd_attn_mm_run in philox_dropout.c) over all its problems
 * (xd_attn_mm_call: parts, threads, dk and dv), which the module's attention_mm wrappers (torch) and
 * XLA:CPU custom-call handlers of XLA's typed FFI both make. jax.ffi registers the handlers and calls
 * them with XLA's own buffers: no Python, no copy, no GIL during a step, the parts on XLA's own
 * intra-op threads. Included by _philox_module.c where the avx2/avx512 variants are built and POSIX
 * threads exist.
 *
 * The structs are the parts of XLA's FFI C API that a handler of plain buffers reads, declared here in
 * the layout of xla/ffi/api/c_api.h (API major version 0; jaxlib ships that header). XLA keeps that
 * interface binary-compatible, and every struct starts with its size, checked before a field is read.
 *
 * Handlers (one per variant and direction), buffers in order:
 *   forward:  q (N, L, E), k (N, S, E), v (N, S, Ev), params (12,) uint32  ->  out (N, L, Ev), lse (N, L)
 *   backward: dout (N, L, Ev), q, k, v, lse, params                        ->  dq, dk, dv
 * all float32 C-contiguous but params: seed (2 words, low first), step (2), K (2), scale and the dropout
 * scale as float64 bits (2 each, low word first), flags (1: causal, 2: one (L, S) mask for every problem,
 * 4: heads inner, below), threads. With flag 4 the arrays are (B, rows, H, F) (Flax's layout: problem
 * n = b H + h), read and written where they are; lse (B, H, L).
 */
#include <pthread.h>
#include <stddef.h>

typedef struct xd_ffi_ext {
    size_t struct_size;
    int type; /* 1: metadata */
    struct xd_ffi_ext *next;
} xd_ffi_ext;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    int major, minor;
} xd_ffi_version;

typedef struct {
    size_t struct_size;
    xd_ffi_version api_version;
    uint32_t traits;
} xd_ffi_metadata;

typedef struct {
    xd_ffi_ext base;
    xd_ffi_metadata *metadata;
} xd_ffi_metadata_ext;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    const char *message;
    int code;
} xd_ffi_error_args;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    void *error;
} xd_ffi_error_destroy_args;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    void *ctx;
    void (*task)(void *);
    void *data;
} xd_ffi_schedule_args;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    xd_ffi_version api_version;
    const void *internal;
    void *(*error_create)(xd_ffi_error_args *);
    void *error_get_message;
    void (*error_destroy)(xd_ffi_error_destroy_args *);
    void *handler_register, *stream_get, *type_register, *context_get, *state_set, *state_get;
    void *memory_allocate, *memory_free;
    void *(*pool_schedule)(xd_ffi_schedule_args *); /* absent from runtimes whose struct is shorter */
} xd_ffi_api;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    int dtype; /* 8: uint32, 11: float32 */
    void *data;
    int64_t rank;
    int64_t *dims;
} xd_ffi_buffer;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    int64_t size;
    int *types; /* 1: buffer */
    void **items;
} xd_ffi_list;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    int64_t size;
    int *types;
    void **names, **attrs;
} xd_ffi_attrs;

typedef struct {
    size_t struct_size;
    xd_ffi_ext *ext;
    const xd_ffi_api *api;
    void *ctx;
    int stage; /* 3: execute */
    xd_ffi_list args, rets;
    xd_ffi_attrs attrs;
} xd_ffi_frame;

#define XD_FFI_INVALID_ARGUMENT 3
#define XD_FFI_RESOURCE_EXHAUSTED 8
#define XD_FFI_INTERNAL 13

static void *xd_ffi_error(const xd_ffi_frame *f, int code, const char *message) {
    xd_ffi_error_args a = {sizeof a, NULL, message, code};
    return f->api->error_create(&a);
}

/* A metadata query (XLA asks a handler which API version it was built for): answered with the
 * runtime's own version, since the handler uses nothing a later minor version added. Returns 1 if the
 * frame was one. */
static int xd_ffi_metadata_query(const xd_ffi_frame *f) {
    if (f->ext == NULL || f->ext->type != 1) return 0;
    xd_ffi_metadata *m = ((const xd_ffi_metadata_ext *)(const void *)f->ext)->metadata;
    m->api_version.struct_size = sizeof m->api_version;
    m->api_version.ext = NULL;
    m->api_version.major = f->api->api_version.major;
    m->api_version.minor = f->api->api_version.minor;
    m->traits = 0;
    return 1;
}

/* GOMP_parallel's contract on POSIX threads: fn(data) on `threads` threads, the caller one of them,
 * returning when all are done. A thread that cannot be started leaves its share to the others (the
 * routine's threads take parts until none is left). */
typedef struct {
    void (*fn)(void *);
    void *data;
} xd_thread_job;

static void *xd_thread_main(void *arg) {
    const xd_thread_job *job = (const xd_thread_job *)arg;
    job->fn(job->data);
    return NULL;
}

#define XD_MAX_THREADS 256

static void xd_pthread_parallel(void (*fn)(void *), void *data, unsigned threads, unsigned flags) {
    (void)flags;
    pthread_t ids[XD_MAX_THREADS];
    xd_thread_job job = {fn, data};
    unsigned started = 0;
    if (threads > XD_MAX_THREADS) threads = XD_MAX_THREADS;
    for (unsigned i = 1; i < threads; i++)
        if (pthread_create(&ids[started], NULL, xd_thread_main, &job) == 0) started++;
    fn(data);
    for (unsigned i = 0; i < started; i++) pthread_join(ids[i], NULL);
}

/* GOMP_parallel's contract on XLA's own intra-op threads (XLA_FFI_ThreadPool_Schedule: on XLA:CPU the
 * pool that runs all compute tasks), for the handler running on this thread (xd_frame). XLA promises
 * neither when a task starts nor that tasks run in parallel, so the caller runs fn(data) itself, then
 * closes the gate and waits only for the tasks that had started; a task that starts later does nothing
 * (fn's threads take parts until none is left, so the work is done either way). The gate lives on the
 * heap until its last holder lets go. Where the runtime has no such pool: POSIX threads. */
static __thread const xd_ffi_frame *xd_frame;

typedef struct {
    void (*fn)(void *);
    void *data;
    pthread_mutex_t mu;
    pthread_cond_t idle;
    int closed, running, refs;
} xd_gate;

static void xd_gate_release(xd_gate *g) {
    pthread_mutex_lock(&g->mu);
    int last = --g->refs == 0;
    pthread_mutex_unlock(&g->mu);
    if (last) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->idle);
        free(g);
    }
}

static void xd_gate_task(void *arg) {
    xd_gate *g = (xd_gate *)arg;
    pthread_mutex_lock(&g->mu);
    int go = !g->closed;
    g->running += go;
    pthread_mutex_unlock(&g->mu);
    if (go) {
        g->fn(g->data);
        pthread_mutex_lock(&g->mu);
        if (--g->running == 0) pthread_cond_broadcast(&g->idle);
        pthread_mutex_unlock(&g->mu);
    }
    xd_gate_release(g);
}

static int xd_has_pool(const xd_ffi_frame *f) {
    return f != NULL && f->api->struct_size >= offsetof(xd_ffi_api, pool_schedule) + sizeof f->api->pool_schedule
           && f->api->pool_schedule != NULL;
}

static void xd_xla_parallel(void (*fn)(void *), void *data, unsigned threads, unsigned flags) {
    const xd_ffi_frame *f = xd_frame;
    xd_gate *g = xd_has_pool(f) ? (xd_gate *)malloc(sizeof *g) : NULL;
    if (g == NULL) {
        xd_pthread_parallel(fn, data, threads, flags);
        return;
    }
    g->fn = fn, g->data = data, g->closed = 0, g->running = 0, g->refs = 1;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->idle, NULL);
    for (unsigned i = 1; i < threads; i++) {
        pthread_mutex_lock(&g->mu);
        g->refs++; /* the task's */
        pthread_mutex_unlock(&g->mu);
        xd_ffi_schedule_args a = {sizeof a, NULL, f->ctx, xd_gate_task, g};
        void *err = f->api->pool_schedule(&a);
        if (err != NULL) { /* no pool after all: the task was not taken */
            xd_ffi_error_destroy_args d = {sizeof d, NULL, err};
            f->api->error_destroy(&d);
            xd_gate_release(g);
            break;
        }
    }
    fn(data);
    pthread_mutex_lock(&g->mu);
    g->closed = 1;
    while (g->running > 0) pthread_cond_wait(&g->idle, &g->mu);
    pthread_mutex_unlock(&g->mu);
    xd_gate_release(g);
}

/* The parts of a call (n0, n1, i0, i1, dk, dv addresses): about 4 per thread, runs of whole problems where there are enough of them, else each
 * problem's rows in parts; in the backward rows are split only where there are fewer problems than
 * threads. Returns the count; table holds n + 8 * threads rows at least. */
static xd_u64 xd_attn_mm_parts(xd_u64 n, xd_u64 length, xd_u64 threads, int backward, int64_t *table) {
    xd_u64 want = threads * 4, count = 0, floor = backward ? threads : want;
    if (n >= floor) {
        xd_u64 c = n < want ? n : want;
        for (xd_u64 t = 0; t < c; t++) {
            int64_t *r = table + 6 * count;
            r[0] = (int64_t)(n * t / c), r[1] = (int64_t)(n * (t + 1) / c), r[2] = 0, r[3] = (int64_t)length;
            if (r[1] > r[0]) count++;
        }
        return count;
    }
    xd_u64 per = (floor + n - 1) / n;
    for (xd_u64 i = 0; i < n; i++)
        for (xd_u64 t = 0; t < per; t++) {
            int64_t *r = table + 6 * count;
            r[0] = (int64_t)i, r[1] = (int64_t)i + 1;
            r[2] = (int64_t)(length * t / per), r[3] = (int64_t)(length * (t + 1) / per);
            if (r[3] > r[2]) count++;
        }
    return count;
}

static double xd_ffi_f64(const xd_u32 *w) {
    xd_u64 bits = (xd_u64)w[0] | (xd_u64)w[1] << 32;
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* The buffer's float32 data if its dims are (B, rows, H, F) (heads inner: rank 4) or (B * H, rows, F),
 * else NULL; F = 0 for lse, (B, H, L) or (B * H, L) whatever the layout. */
static float *xd_ffi_f32(const xd_ffi_buffer *b, int heads_inner, int64_t B, int64_t H, int64_t rows, int64_t F) {
    int64_t dims[4] = {B, rows, H, F}, *at = dims, rank = F ? 4 : 3;
    if (!F) dims[1] = H, dims[2] = rows;
    if (!heads_inner) at[1] = B * H, at[2] = rows, at[3] = F, at++, rank--;
    if (b->dtype != 11 || b->rank != rank) return NULL;
    for (int64_t i = 0; i < rank; i++)
        if (b->dims[i] != at[i]) return NULL;
    return (float *)b->data;
}

typedef int (*xd_mm_run_fn)(const xd_attn *, const xd_attn_io *, const int64_t *, xd_u64, int, xd_parallel_fn,
                            unsigned);

/* One call of the routine over all n problems, for the XLA handlers and the module's attention_mm
 * wrappers (torch): the parts, the threads (through `parallel`, GOMP_parallel's contract; NULL: POSIX
 * threads), and in the backward dk and dv zeroed first (the routine adds into them) or summed from
 * per-part buffers, in part order (the sums do not depend on the threads). t's arrays are
 * (N, rows, F), or (B, rows, H, F) where t->heads = H > 1. Returns the routine's status (-1: out of
 * memory). */
static int xd_attn_mm_call(const xd_attn *p, xd_attn_io *t, xd_u64 n, xd_u64 threads, int backward, xd_mm_run_fn run,
                           xd_parallel_fn parallel) {
    threads = threads == 0 ? 1 : threads > XD_MAX_THREADS ? XD_MAX_THREADS : threads;
    int64_t *table = (int64_t *)malloc((size_t)(n + 8 * threads + 1) * 6 * sizeof *table);
    if (table == NULL) return -1;
    xd_u64 count = xd_attn_mm_parts(n, p->length, threads, backward, table);
    xd_u64 S = p->keys, E = t->e, Ev = t->ev, H = t->heads > 1 ? t->heads : 1;
    size_t ke = (size_t)(S * E), ve = (size_t)(S * Ev);
    int split = backward && count > n; /* a problem's rows in several parts: each adds into its own dk, dv */
    float *partial = split ? (float *)calloc(count * (ke + ve), sizeof *partial) : NULL;
    if (split && partial == NULL) {
        free(table);
        return -1;
    }
    if (backward) {
        memset(t->dk, 0, n * ke * sizeof *t->dk);
        memset(t->dv, 0, n * ve * sizeof *t->dv);
    }
    t->dheads = split ? 1 : H; /* the per-part buffers are (S, F) */
    for (xd_u64 j = 0; j < count; j++) {
        int64_t *r = table + 6 * j;
        xd_u64 n0 = (xd_u64)r[0];
        float *dk = !backward ? NULL : split ? partial + j * (ke + ve) : XD_MM_AT(t->dk, n0, S, E, H);
        float *dv = !backward ? NULL : split ? partial + j * (ke + ve) + ke : XD_MM_AT(t->dv, n0, S, Ev, H);
        r[4] = (int64_t)(intptr_t)dk, r[5] = (int64_t)(intptr_t)dv;
    }
    parallel = parallel != NULL ? parallel : xd_pthread_parallel;
    int rc = run(p, t, table, count, backward, threads > 1 ? parallel : NULL, (unsigned)threads);
    for (xd_u64 j = 0; rc == 0 && split && j < count; j++) {
        xd_u64 at = (xd_u64)table[6 * j];
        const float *pk = partial + j * (ke + ve), *pv = pk + ke;
        float *dk = XD_MM_AT(t->dk, at, S, E, H), *dv = XD_MM_AT(t->dv, at, S, Ev, H);
        for (xd_u64 r = 0; r < S; r++) {
            for (xd_u64 i = 0; i < E; i++) dk[r * H * E + i] += pk[r * E + i];
            for (xd_u64 i = 0; i < Ev; i++) dv[r * H * Ev + i] += pv[r * Ev + i];
        }
    }
    free(partial);
    free(table);
    return rc;
}

static void *xd_ffi_attention(const xd_ffi_frame *f, int backward, xd_mm_run_fn run) {
    if (f->struct_size < sizeof *f)
        return xd_ffi_error(f, XD_FFI_INTERNAL, "xdrop attention: XLA's FFI call frame is older than expected");
    if (xd_ffi_metadata_query(f)) return NULL;
    if (f->stage != 3) return NULL;
    int nin = backward ? 6 : 4, nout = backward ? 3 : 2;
    if (f->args.size != nin || f->rets.size != nout)
        return xd_ffi_error(f, XD_FFI_INVALID_ARGUMENT, "xdrop attention: wrong number of buffers");
    for (int i = 0; i < nin; i++)
        if (f->args.types[i] != 1) return xd_ffi_error(f, XD_FFI_INVALID_ARGUMENT, "xdrop attention: not a buffer");
    const xd_ffi_buffer *const *in = (const xd_ffi_buffer *const *)f->args.items;
    const xd_ffi_buffer *const *out = (const xd_ffi_buffer *const *)f->rets.items;
    const xd_ffi_buffer *qb = in[backward], *kb = in[backward + 1], *vb = in[backward + 2], *pb = in[nin - 1];
    if (pb->dtype != 8 || pb->rank != 1 || pb->dims[0] != 12)
        return xd_ffi_error(f, XD_FFI_INVALID_ARGUMENT, "xdrop attention: bad parameters");
    const xd_u32 *w = (const xd_u32 *)pb->data;
    int heads_inner = (int)(w[10] >> 2 & 1); /* q, k, v, out and the gradients in (B, L, H, F) memory */
    int64_t rank = heads_inner ? 4 : 3;
    if (qb->rank != rank || kb->rank != rank || vb->rank != rank)
        return xd_ffi_error(f, XD_FFI_INVALID_ARGUMENT, "xdrop attention: bad operand ranks");
    int64_t B = heads_inner ? qb->dims[0] : 1, H = heads_inner ? qb->dims[2] : qb->dims[0];
    int64_t L = qb->dims[1], E = qb->dims[rank - 1], S = kb->dims[1], Ev = vb->dims[rank - 1];
    xd_u64 n = (xd_u64)(B * H);
    xd_attn p = {0};
    xd_attn_io t = {0};
    int hi = heads_inner;
    t.q = xd_ffi_f32(qb, hi, B, H, L, E), t.k = xd_ffi_f32(kb, hi, B, H, S, E), t.v = xd_ffi_f32(vb, hi, B, H, S, Ev);
    if (backward) {
        t.dout = xd_ffi_f32(in[0], hi, B, H, L, Ev), t.lse = xd_ffi_f32(in[4], hi, B, H, L, 0);
        t.dq = xd_ffi_f32(out[0], hi, B, H, L, E), t.dk = xd_ffi_f32(out[1], hi, B, H, S, E);
        t.dv = xd_ffi_f32(out[2], hi, B, H, S, Ev);
    } else {
        t.out = xd_ffi_f32(out[0], hi, B, H, L, Ev), t.lse = xd_ffi_f32(out[1], hi, B, H, L, 0);
    }
    int have = t.q && t.k && t.v && t.lse && (backward ? t.dout && t.dq && t.dk && t.dv : t.out != NULL);
    if (!have || n == 0 || L <= 0 || S <= 0 || E <= 0 || Ev <= 0 || E % 16 || Ev % 16)
        return xd_ffi_error(f, XD_FFI_INVALID_ARGUMENT, "xdrop attention: bad operands");
    t.e = (xd_u64)E, t.ev = (xd_u64)Ev;
    p.length = (xd_u64)L, p.keys = (xd_u64)S, p.inner = 1;
    p.seed = (xd_u64)w[0] | (xd_u64)w[1] << 32, p.step = (xd_u64)w[2] | (xd_u64)w[3] << 32;
    p.k = (xd_u64)w[4] | (xd_u64)w[5] << 32;
    p.scale = xd_ffi_f64(w + 6), p.a = xd_ffi_f64(w + 8);
    p.causal = (int)(w[10] & 1), p.shared = (int)(w[10] >> 1 & 1);
    xd_u64 threads = w[11];
    t.heads = (xd_u64)H * (xd_u64)heads_inner; /* 0: (N, rows, F) */
    xd_frame = f;
    int rc = xd_attn_mm_call(&p, &t, n, threads, backward, run, xd_xla_parallel);
    xd_frame = NULL;
    return rc == 0 ? NULL : xd_ffi_error(f, XD_FFI_RESOURCE_EXHAUSTED, "xdrop attention: out of memory");
}

#define XD_FFI_HANDLERS(SUFFIX)                                                   \
    static void *xd_ffi_attention_fwd##SUFFIX(const xd_ffi_frame *f) {            \
        return xd_ffi_attention(f, 0, xd_attn_mm_run##SUFFIX);                    \
    }                                                                             \
    static void *xd_ffi_attention_bwd##SUFFIX(const xd_ffi_frame *f) {            \
        return xd_ffi_attention(f, 1, xd_attn_mm_run##SUFFIX);                    \
    }
XD_FFI_HANDLERS(_avx512)
XD_FFI_HANDLERS(_avx2)
