"""Every fast path equals the reference bit for bit; the autograd Function saves no tensor.

The CUDA kernels cannot run here (no GPU), so their source text is also
compiled for the host by the machine's C++ compiler, with the launch grid
emulated, and compared with the reference: the same Philox arithmetic and
index logic the GPU runs.
"""

from __future__ import annotations

import ctypes
import itertools
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import helpers
import numpy as np
import pytest

import xdrop
from xdrop import _kernels
from xdrop._kernels.cuda import _nvrtc as _cuda
from xdrop._kernels.host import _buffers as _host
from xdrop._kernels.host import _native
from xdrop._lib._stream import keep_count, keep_flat, scale_for
from xdrop.random import philox4x32

HOST_IMPLS = ["blocked", "compiled"]
TINY = [2.0**-33, 2.0**-32, 1e-9]
PS = [0.0, *TINY, 0.1, 1 / 3, 0.5, 0.9, 1 - 2.0**-32, 1.0]
SEEDS = [(0, 0), (7, 3), (2**64 - 1, 2**64 - 1), (0xDEADBEEF << 32 | 5, 1 << 63)]
SHAPES = [(), (0,), (1,), (3,), (5,), (7, 9), (2, 3, 5), (4, 0, 3), (64,), (65,), (1023,)]
DTYPES = ["float16", "float32", "float64"]
# Crosses the NumPy engine's piece size and the threading threshold, with an odd tail.
LARGE = _host.PARALLEL_MIN + 4099

xp_np = pytest.importorskip("array_api_compat.numpy")


def needs_native() -> None:
    if _native.library() is None:
        pytest.skip(f"compiled kernel unavailable: {_native.build_info().error}")


def host_impl(impl: str) -> str:
    if impl == "compiled":
        needs_native()
    return impl


def random_input(shape, dtype, seed=0):
    return helpers.random_input(shape, dtype, seed, specials=True)


def reference(x, p, seed, step):
    with np.errstate(all="ignore"):  # -0 * inf in float16 at p near 1: NaN, as specified
        return xdrop.dropout(x, p, seed=seed, step=step, impl="reference")


# -- host kernels on NumPy arrays -----------------------------------------------------------------


@pytest.mark.parametrize("impl", HOST_IMPLS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_host_kernels_match_reference_on_shapes(impl, dtype, shape):
    x = random_input(shape, dtype)
    for p in (0.1, 0.5):
        for seed, step in SEEDS[1:3]:
            got = xdrop.dropout(x, p, seed=seed, step=step, impl=host_impl(impl))
            ref = reference(x, p, seed, step)
            assert type(got) is type(ref) and got.dtype == ref.dtype and got.shape == ref.shape
            assert got.tobytes() == ref.tobytes()


@pytest.mark.parametrize("impl", HOST_IMPLS)
@pytest.mark.parametrize("p", PS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_host_kernels_match_reference_on_p(impl, p, dtype):
    x = random_input((37, 29), dtype, seed=3)
    for seed, step in SEEDS:
        got = xdrop.dropout(x, p, seed=seed, step=step, impl=host_impl(impl))
        assert got.tobytes() == reference(x, p, seed, step).tobytes()


@pytest.mark.parametrize("impl", HOST_IMPLS)
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_host_kernels_large_threaded(impl, dtype):
    x = random_input((LARGE,), dtype, seed=4)
    seed, step = SEEDS[3]
    got = xdrop.dropout(x, 1 / 3, seed=seed, step=step, impl=host_impl(impl))
    assert got.tobytes() == reference(x, 1 / 3, seed, step).tobytes()


@pytest.mark.parametrize("impl", HOST_IMPLS)
def test_host_kernels_on_views_and_leave_input_alone(impl):
    base = random_input((12, 20), "float32", seed=5)
    before = base.copy()
    views = [base[::2, 1::3], base[::-1], base[:, ::-3], base.T, base[3], base[2:9:2, ::-1].T]
    for v in views:
        got = xdrop.dropout(v, 0.5, seed=11, step=2**40, impl=host_impl(impl))
        assert got.tobytes() == reference(np.ascontiguousarray(v), 0.5, 11, 2**40).tobytes()
        assert got.strides == np.empty_like(v).strides  # the layout of empty_like(v): F stays F
    assert base.tobytes() == before.tobytes()


@pytest.mark.parametrize("impl", ["auto", *HOST_IMPLS])
@pytest.mark.parametrize("start", [0, 1, 2, 3, 5, 63, 64, 65, 2**40 + 3, 2**63 - 7])
@pytest.mark.parametrize("n", [0, 1, 3, 4, 7, 64, 129, 1000])
def test_host_mask_kernels_with_offsets(impl, start, n):
    if impl != "auto":
        host_impl(impl)
    for p in (0.3, 0.0, 1.0):
        k = keep_count(p)
        seed, step = SEEDS[2]
        got = _kernels.select_mask(xp_np, impl)(xp_np, start, n, seed, step, k, None)
        ref = keep_flat(xp_np, start, n, seed, step, k, None)
        assert got.dtype == np.bool_ and got.shape == (n,)
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("impl", HOST_IMPLS)
def test_host_mask_large_threaded(impl):
    k = keep_count(0.25)
    got = _kernels.select_mask(xp_np, host_impl(impl))(xp_np, 13, LARGE, 5, 6, k, None)
    assert np.array_equal(got, keep_flat(xp_np, 13, LARGE, 5, 6, k, None))


def test_keep_mask_and_noise_shape_use_fast_masks():
    needs_native()
    for impl in HOST_IMPLS:
        got = xdrop.keep_mask((5, 7), 0.4, seed=3, step=1, xp=np, impl=impl)
        assert np.array_equal(got, xdrop.keep_mask((5, 7), 0.4, seed=3, step=1, xp=np, impl="reference"))
        x = random_input((4, 5, 6), "float32")
        got = xdrop.dropout(x, 0.4, seed=3, noise_shape=(4, 1, 6), impl=impl)
        assert got.tobytes() == xdrop.dropout(x, 0.4, seed=3, noise_shape=(4, 1, 6), impl="reference").tobytes()


# -- every compiled variant (base, AVX2, ...) the CPU runs -------------------------------------------


@pytest.fixture(params=_native.VARIANTS)
def variant(request, monkeypatch):
    """Route impl="compiled" to one compiled variant; a variant this CPU cannot run is skipped, saying so."""
    needs_native()
    kernels = _native.library(request.param)
    if kernels is None:
        pytest.skip(f"compiled variant {request.param!r} not run by this CPU (it runs {_native.build_info().variants})")
    monkeypatch.setattr(_native, "library", lambda variant=None: kernels)
    return request.param


# Ranges across a carry into the block's high word (block 2**32) and up to the last index, 2**64 - 1.
EDGE_STARTS = [0, 3, 4 * 2**32 - 37, 4 * 2**32 - 2, 2**63 - 7, *(2**64 - d for d in (300, 129, 128, 65, 3))]


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_variant_dropout_matches_reference(variant, dtype):
    for shape in [(1,), (5,), (63,), (64,), (65,), (7, 9), (1023,), (LARGE,)]:
        x = random_input(shape, dtype, seed=len(shape) + shape[0])
        for p in (TINY[0], 0.1, 0.5, 1 - 2.0**-32) if shape[0] < 2000 else (1 / 3,):
            for seed, step in SEEDS:
                got = xdrop.dropout(x, p, seed=seed, step=step, impl="compiled")
                assert got.tobytes() == reference(x, p, seed, step).tobytes(), (variant, shape, p, seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_compiled_variant_dropout_of_strided_views_matches_reference(variant, dtype):
    base = random_input((70, 33), dtype, seed=11)
    for view in (base[::2], base.T, base[:, 1::3], base[::-1]):
        for seed, step in SEEDS:
            got = xdrop.dropout(view, 0.3, seed=seed, step=step, impl="compiled")
            want = reference(np.ascontiguousarray(view), 0.3, seed, step)
            assert got.shape == view.shape, (variant, view.strides)
            assert np.ascontiguousarray(got).tobytes() == want.tobytes(), (variant, view.strides)


@pytest.mark.parametrize("entry", ["arrays", "addresses"])
def test_small_array_entry_points_match_reference(variant, entry, monkeypatch):
    """Below the threading threshold NumPy arrays reach the C kernel in one call: passing the arrays
    themselves (read through the buffer protocol) up to BY_ARRAY_MAX elements, else addresses."""
    kernels = _native.library()
    assert set(kernels.array_dropout) == {"f", "d"}, "the extension takes float32/float64 arrays themselves"
    if entry == "addresses":
        monkeypatch.setattr(kernels, "array_dropout", {})
    for dtype in ("float32", "float64"):
        for shape in [
            (),
            (0,),
            (1,),
            (5,),
            (64,),
            (65,),
            (7, 9),
            (1023,),
            (_kernels.BY_ARRAY_MAX,),
            (_kernels.BY_ARRAY_MAX + 1,),
        ]:
            x = random_input(shape, dtype, seed=3)
            x.flags.writeable = False  # a read-only input is read, never written
            for p in (TINY[0], 0.5, 1 - 2.0**-32):
                for seed, step in SEEDS:
                    got = xdrop.dropout(x, p, seed=seed, step=step)
                    assert got.tobytes() == reference(x, p, seed, step).tobytes(), (variant, entry, shape, p)


def test_compiled_variant_masks_match_reference(variant):
    kernel = _kernels.select_mask(xp_np, "compiled")
    for start in EDGE_STARTS:
        for n in (1, 3, 64, 65, 130, 257):
            n = min(n, 2**64 - start)
            for p in (0.3, 2.0**-33):
                k = keep_count(p)
                for seed, step in SEEDS[1:]:
                    got = kernel(xp_np, start, n, seed, step, k, None)
                    assert np.array_equal(got, keep_flat(xp_np, start, n, seed, step, k, None)), (variant, start, n)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_compiled_variant_dropout_at_edge_starts(variant, dtype):
    """The C entry points at flat starts across a carry into the block's high word and up to 2**64 - 1:
    whole chunks (AVX2 applies its masks from registers, with a shortcut where no lane carries) and
    partial ones (which compute only the passes they use), for every kind of threshold (0 and 2**32
    skip Philox)."""
    kernels = _native.library()
    fn = kernels.xd_dropout_f32 if dtype == "float32" else kernels.xd_dropout_f64
    x = random_input((700,), dtype, seed=5)
    scale = 1.75
    # Chunks (32 blocks; partial ones in passes of 16) that end at block 2**32 or carry into it at a lane.
    starts = [*EDGE_STARTS, *(4 * (2**32 - d) for d in (3, 13, 15, 16, 31, 32, 40, 128))]
    # Sizes that end a partial chunk within, at and past its first pass of 64 elements.
    for start, size in itertools.product(starts, (x.size, 29, 64, 97)):
        n = min(size, 2**64 - start)
        for k in (0, 1, keep_count(0.3), 2**32 - 1, 2**32):
            for seed, step in SEEDS[1:]:
                out = np.full(n, 7, dtype)
                fn(x.ctypes.data, out.ctypes.data, start, n, seed, step, k, scale)
                keep = keep_flat(xp_np, start, n, seed, step, k, None)
                want = np.where(keep, x[:n] * x.dtype.type(scale), x.dtype.type(0))
                assert out.tobytes() == want.tobytes(), (variant, dtype, start, k, seed)


# The AVX-512 chunk routines against the scalar one: edge and random counters, keys and thresholds
# (K in [1, 2**32 - 1]: the kernels split off 0 and 2**32), masks and both products.
AVX512_MAIN = r"""
#include <stdio.h>
static xd_u64 rng_state = 0x9E3779B97F4A7C15u;
static xd_u64 next64(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    return rng_state ^= rng_state << 17;
}
int main(void) {
    const xd_u64 firsts[] = {0, 4, 128, 4 * (((xd_u64)1 << 32) - 20), 4 * (((xd_u64)1 << 32) - 1),
                             4 * (((xd_u64)1 << 32) - 32), ((xd_u64)1 << 63) - 4, (xd_u64)0 - 128};
    const xd_u64 ks[] = {1, 2, (xd_u64)1 << 31, ((xd_u64)1 << 32) - 1, 0x7FFFFFFF, 3000000000u};
    const xd_u64 keys[] = {0, (xd_u64)0 - 1, 0xDEADBEEF00000005u};
    xd_u32 a[XD_CHUNK], b[XD_CHUNK];
    float xf[XD_CHUNK], of[XD_CHUNK], wf[XD_CHUNK];
    double xd[XD_CHUNK], od[XD_CHUNK], wd[XD_CHUNK];
    for (int e = 0; e < XD_CHUNK; e++) {
        xf[e] = e % 7 == 3 ? -0.0f : (float)(e - 60) / 7.0f;
        xd[e] = e % 5 == 1 ? -0.0 : (double)(e - 50) / 3.0;
    }
    xf[9] = __builtin_nanf(""), xd[9] = __builtin_nan("");
    int n = 0;
    for (int r = 0; r < 2000 + 8 * 6 * 9; r++) {
        xd_u64 first, step, seed, k;
        if (r < 8 * 6 * 9) {
            first = firsts[r % 8], k = ks[r / 8 % 6], seed = keys[r / 48 % 3], step = keys[r / 144 % 3];
        } else {
            first = next64() & ~(xd_u64)3, step = next64(), seed = next64(), k = next64() % (((xd_u64)1 << 32) - 1) + 1;
        }
        if (r % 3 == 0) first = (xd_u64)(4 * (((xd_u64)1 << 32) - (r / 3) % 40)); /* carries at every lane */
        xd_ctx_avx512 c;
        xd_ctx_avx512_init(&c, seed, step, k);
        xd_keep_blocks(first, XD_CHUNK / 4, step, seed, k, a); /* the scalar reference: a whole chunk */
        xd_keep_chunk_avx512(&c, first, XD_CHUNK, b);
        xd_f32_chunk_avx512(&c, first, xf, of, 1.5f);
        xd_f64_chunk_avx512(&c, first, xd, od, 1.5);
        for (int e = 0; e < XD_CHUNK; e++) {
            wf[e] = a[e] ? xf[e] * 1.5f : 0.0f;
            wd[e] = a[e] ? xd[e] * 1.5 : 0.0;
        }
        if (memcmp(a, b, sizeof a) != 0 || memcmp(of, wf, sizeof of) != 0 || memcmp(od, wd, sizeof od) != 0) {
            printf("differ: first=%llu step=%llu seed=%llu k=%llu\n", (unsigned long long)first,
                   (unsigned long long)step, (unsigned long long)seed, (unsigned long long)k);
            return 1;
        }
        n++;
    }
    printf("%d chunks equal\n", n);
    return 0;
}
"""


def test_avx512_chunk_equals_the_scalar_chunk_under_emulation(tmp_path):
    """The AVX-512 variant's chunk routines (masks, float32 and float64 products), their intrinsics
    replaced by scalar stand-ins (tests/avx512_emulation.h), against the scalar routine: their
    algorithm is checked on any CPU.

    On a CPU with AVX-512F the variant itself runs in the tests above (the ``variant`` fixture).
    """
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the emulation harness")
    text = Path(_native.SOURCE).read_text()
    head = text[: text.index("#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))")]
    start = text.index("/* ---- AVX-512F")
    body = text[start : text.index("/* ---- end of AVX-512F ---- */")]
    harness = tmp_path / "avx512_harness.c"
    emulation = Path(__file__).with_name("avx512_emulation.h")
    harness.write_text(f'{head}\n#include "{emulation}"\n#define XD_AVX512\n{body}\n#endif\n{AVX512_MAIN}')
    exe = tmp_path / "avx512_harness"
    subprocess.run([cc, "-O1", "-std=gnu99", "-o", str(exe), str(harness)], check=True, capture_output=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == f"{2000 + 8 * 6 * 9} chunks equal"


def call_with_timeout(fn, seconds=60):
    """``fn()`` on a daemon thread: a kernel that loops forever fails the test instead of hanging it."""
    result = []
    t = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"the call did not return within {seconds} s"
    return result[0]


@pytest.mark.parametrize("impl", HOST_IMPLS)
@pytest.mark.parametrize("last", [0, 1, 5, 63, 64, 127, 128, 200])
def test_host_masks_up_to_the_last_index(impl, last):
    """A range ending within a chunk of 2**64 (the C loop once wrapped its bound and never ended)."""
    k = keep_count(0.4)
    kernel = _kernels.select_mask(xp_np, host_impl(impl))
    for n in (1, 70, 300):
        start = 2**64 - last - n
        got = call_with_timeout(lambda start=start, n=n: kernel(xp_np, start, n, 9, 2**63, k, None))
        assert np.array_equal(got, keep_flat(xp_np, start, n, 9, 2**63, k, None))


def test_run_ranges_partitions_exactly():
    for n in (0, 1, _host.PARALLEL_MIN - 1, _host.PARALLEL_MIN, 3 * _host.PARALLEL_MIN + 17):
        seen = np.zeros(n, np.int64)

        def body(lo, hi, seen=seen):
            seen[lo:hi] += 1

        _host.run_ranges(n, body)
        assert (seen == 1).all()


@pytest.mark.parametrize("failing", ["pool", "caller"])  # a pool thread's range; the calling thread's range
def test_run_ranges_raises_only_after_every_range_is_done(failing, monkeypatch):
    monkeypatch.setattr(_host, "_workers", lambda: 2)  # two threads even on a one-core machine
    n = 3 * _host.PARALLEL_MIN
    started, ended = [], []

    def body(lo, hi):
        started.append(lo)
        if (threading.current_thread() is threading.main_thread()) == (failing == "caller"):
            raise ArithmeticError(f"range {lo}")
        time.sleep(0.05)  # the other thread is still writing when the first one fails
        ended.append(lo)

    with pytest.raises(ArithmeticError, match="range"):
        _host.run_ranges(n, body)
    running = len(started) - len(ended) - 1  # the failed range never ends
    time.sleep(0.2)
    assert running == 0  # every range that started had finished before the error reached the caller
    assert len(started) == len(ended) + 1  # and none started after


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs signal.setitimer")
def test_run_ranges_waits_for_its_threads_through_a_ctrl_c(monkeypatch):
    """A KeyboardInterrupt raised while the caller waits for a pool thread (a SIGALRM handler stands
    in for Ctrl-C's): the call raises it only once the thread's range is done, and no range starts after."""
    monkeypatch.setattr(_host, "_workers", lambda: 2)
    n = 3 * _host.PARALLEL_MIN
    started, ended = [], []
    pool_busy = threading.Event()

    def body(lo, hi):
        started.append(lo)
        if threading.current_thread() is threading.main_thread():
            pool_busy.wait(5)  # the caller runs its ranges once the pool thread holds one, then waits
        else:
            pool_busy.set()
            signal.setitimer(signal.ITIMER_REAL, 0.05)  # the signal comes while the caller waits ...
            time.sleep(0.3)  # ... for this range
        ended.append(lo)

    def interrupt(*_):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            _host.run_ranges(n, body)
        at_raise = (len(started), len(ended))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    time.sleep(0.5)
    assert at_raise[0] == at_raise[1]  # no range was running when the interrupt reached the caller
    assert (len(started), len(ended)) == at_raise  # and none ran after


# -- selection and fallbacks ----------------------------------------------------------------------


def test_impl_names_are_checked():
    with pytest.raises(ValueError, match="impl must be one of"):
        xdrop.dropout(np.ones(3), 0.5, seed=1, impl="fast")
    with pytest.raises(ValueError, match="impl='cuda' does not apply to numpy"):
        xdrop.dropout(np.ones(3), 0.5, seed=1, impl="cuda")


def test_auto_falls_back_to_numpy_without_the_extension(monkeypatch):
    monkeypatch.setattr(_native, "library", lambda: None)
    assert _host.default_engine() == "blocked"
    x = random_input((300,), "float32")
    assert xdrop.dropout(x, 0.5, seed=2).tobytes() == reference(x, 0.5, 2, 0).tobytes()
    info = _native.BuildInfo(None, 0.0, "the compiled kernel is not installed")
    monkeypatch.setattr(_native, "build_info", lambda: info)
    with pytest.raises(RuntimeError, match=r"impl='compiled' needs the compiled kernel.*not installed"):
        xdrop.dropout(x, 0.5, seed=2, impl="compiled")


def test_native_block_words_match_random123_philox():
    needs_native()
    lib = _native.library()
    w = (ctypes.c_uint32 * 4)()
    for block, step, seed in [(0, 0, 0), (2**62 - 1, 2**64 - 1, 2**64 - 1), (12345, 2**33 + 7, 0xA409382229F31D0)]:
        lib.xd_block_words(block, step, seed, ctypes.addressof(w))
        counter = (block & 0xFFFFFFFF, block >> 32, step & 0xFFFFFFFF, step >> 32)
        expected = philox4x32(counter, (seed & 0xFFFFFFFF, seed >> 32))
        assert list(w) == [int(e) for e in expected]


# -- the CUDA source, compiled for the host ------------------------------------------------------

HARNESS = r"""
struct xd_dim3 { unsigned int x; };
static xd_dim3 blockIdx, blockDim, threadIdx;
#define __global__
#define __device__
#define __forceinline__ inline
#define __align__(n) __attribute__((aligned(n)))
static inline unsigned int __umulhi(unsigned int a, unsigned int b) {
    return (unsigned int)(((unsigned long long)a * b) >> 32);
}
#define XD_GRID(call) \
    blockDim.x = block; \
    for (blockIdx.x = 0; blockIdx.x < grid; blockIdx.x++) \
        for (threadIdx.x = 0; threadIdx.x < block; threadIdx.x++) call;
"""
LAUNCHERS = r"""
extern "C" void run_mask(unsigned grid, unsigned block, xd_u64 start, xd_u64 n, xd_u64 seed, xd_u64 step,
                         xd_u64 k, bool *out) { XD_GRID(xd_mask(start, n, seed, step, k, out)) }
extern "C" void run_dropout(unsigned grid, unsigned block, const XD_T *x, XD_T *out, xd_u64 n, xd_u64 seed,
                            xd_u64 step, xd_u64 k, XD_S scale) { XD_GRID(xd_dropout(x, out, n, seed, step, k, scale)) }
extern "C" void run_dropout_vec(unsigned grid, unsigned block, const XD_T *x, XD_T *out, xd_u64 n, xd_u64 seed,
                                xd_u64 step, xd_u64 k, XD_S scale) {
    XD_GRID(xd_dropout_vec(x, out, n, seed, step, k, scale))
}
"""


@pytest.fixture(scope="module")
def cuda_on_host(tmp_path_factory):
    """The NVRTC source built by the host C++ compiler, one library per dtype."""
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler to build the CUDA source for the host")
    libs = {}
    for dtype, ctype in (("float32", ctypes.c_float), ("float64", ctypes.c_double)):
        src = tmp_path_factory.mktemp("cuda") / f"kernels_{dtype}.cpp"
        src.write_text(HARNESS + _cuda.cuda_source(dtype) + LAUNCHERS)
        so = src.with_suffix(".so")
        subprocess.run([cxx, "-O1", "-shared", "-fPIC", "-o", str(so), str(src)], check=True, capture_output=True)
        lib = ctypes.CDLL(str(so))
        u, ptr, ui = ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint
        lib.run_mask.argtypes = [ui, ui, u, u, u, u, u, ptr]
        lib.run_dropout.argtypes = [ui, ui, ptr, ptr, u, u, u, u, ctype]
        lib.run_dropout_vec.argtypes = [ui, ui, ptr, ptr, u, u, u, u, ctype]
        libs[dtype] = lib
    return libs


@pytest.mark.parametrize("start", [0, 1, 3, 6, 2**40 + 5])
@pytest.mark.parametrize("n", [0, 1, 5, 255, 1029])
def test_cuda_mask_kernel_on_host(cuda_on_host, start, n):
    k = keep_count(0.3)
    seed, step = SEEDS[3]
    out = np.zeros(n, np.bool_)
    grid, block = _cuda._grid(-(-(start + n) // 4) - start // 4)
    if n:
        cuda_on_host["float32"].run_mask(grid[0], block[0], start, n, seed, step, k, out.ctypes.data)
    assert np.array_equal(out, keep_flat(xp_np, start, n, seed, step, k, None))


@pytest.mark.parametrize("kernel", ["run_dropout", "run_dropout_vec"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [1, 3, 4, 1021, 4096])
@pytest.mark.parametrize("p", [0.0, 2.0**-33, 0.1, 0.5, 0.9, 1.0])
def test_cuda_dropout_kernel_on_host(cuda_on_host, kernel, dtype, n, p):
    x = random_input((n,), dtype, seed=n)  # NumPy allocations are aligned for the vector kernel
    out = np.full(n, 7, dtype)
    k = keep_count(p)
    scale = scale_for(k, xp_np, x.dtype)
    seed, step = SEEDS[2]
    grid, block = _cuda._grid(-(-n // 4))
    run = getattr(cuda_on_host[dtype], kernel)
    run(grid[0], block[0], x.ctypes.data, out.ctypes.data, n, seed, step, k, scale)
    assert out.tobytes() == reference(x, p, seed, step).tobytes()


# -- torch: CPU kernels and the autograd Function --------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch is not installed")


@pytest.mark.parametrize("impl", ["auto", *HOST_IMPLS])
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cpu_kernels_match_reference(torch, impl, dtype):
    if impl != "auto":
        host_impl(impl)
    for shape in [(), (0,), (5,), (7, 9), (LARGE,)]:
        x_np = random_input(shape, dtype, seed=8)
        x = torch.from_numpy(x_np.copy())
        for p in (0.0, 1 / 3, 1.0):
            got = xdrop.dropout(x, p, seed=SEEDS[2][0], step=SEEDS[2][1], impl=impl)
            assert isinstance(got, torch.Tensor) and got.dtype == x.dtype and tuple(got.shape) == shape
            assert got.numpy().tobytes() == reference(x_np, p, *SEEDS[2]).tobytes()
        assert x.numpy().tobytes() == x_np.tobytes()  # input untouched


@pytest.mark.parametrize("impl", ["auto", *HOST_IMPLS])
def test_torch_cpu_views_and_bfloat16(torch, impl):
    if impl != "auto":
        host_impl(impl)
    base = torch.from_numpy(random_input((10, 12), "float32", seed=9))
    for v in (base.T, base[::3, 1::2], base[4]):
        got = xdrop.dropout(v, 0.5, seed=4, impl=impl)
        assert got.numpy().tobytes() == xdrop.dropout(v.contiguous(), 0.5, seed=4, impl="reference").numpy().tobytes()
    b = base.to(torch.bfloat16)
    got = xdrop.dropout(b, 0.5, seed=4, impl=impl)
    ref = xdrop.dropout(b, 0.5, seed=4, impl="reference")
    assert got.dtype == torch.bfloat16 and torch.equal(got.view(torch.int16), ref.view(torch.int16))


@pytest.mark.parametrize("noise_shape", [None, (4, 1, 6), (1, 5, 1)])
def test_autograd_saves_no_tensor_and_backward_is_dropout(torch, noise_shape):
    x = torch.randn(4, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = xdrop.dropout(x, 0.3, seed=5, step=9, noise_shape=noise_shape)
    assert saved == []
    dout = torch.randn(4, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (dx,) = torch.autograd.grad(y, x, dout)
    expected = xdrop.dropout(dout, 0.3, seed=5, step=9, noise_shape=noise_shape, impl="reference")
    assert torch.equal(dx, expected)
    assert torch.equal(y.detach(), xdrop.dropout(x.detach(), 0.3, seed=5, step=9, noise_shape=noise_shape))


def test_saved_tensors_hook_sees_torch_dropout_mask(torch):
    """The hook in the test above can fail: it sees what torch's own dropout saves."""
    x = torch.randn(100, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        torch.nn.functional.dropout(x, 0.5, training=True)
    assert sum(t.numel() for t in saved) >= 100


def test_autograd_double_backward(torch):
    x = torch.randn(50, dtype=torch.float64, requires_grad=True)
    v = torch.randn(50, dtype=torch.float64, requires_grad=True)
    y = xdrop.dropout(x, 0.4, seed=3)
    (g,) = torch.autograd.grad(y, x, v, create_graph=True)
    w = torch.randn(50, dtype=torch.float64)
    (gg,) = torch.autograd.grad(g, v, w)
    assert torch.equal(gg, xdrop.dropout(w, 0.4, seed=3, impl="reference"))


def test_autograd_under_checkpoint(torch):
    from torch.utils.checkpoint import checkpoint

    def block(t):
        return torch.tanh(xdrop.dropout(t * 2, 0.5, seed=21, step=4)) * t

    x = torch.randn(64, dtype=torch.float64, requires_grad=True)
    (plain,) = torch.autograd.grad(block(x).sum(), x)
    (ckpt,) = torch.autograd.grad(checkpoint(block, x, use_reentrant=False).sum(), x)
    assert torch.equal(plain, ckpt)


def test_autograd_gradcheck(torch):
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: xdrop.dropout(t, 0.25, seed=8), (x,))


def test_no_grad_returns_plain_tensor(torch):
    x = torch.randn(8, requires_grad=True)
    with torch.no_grad():
        y = xdrop.dropout(x, 0.5, seed=1)
    assert not y.requires_grad and y.grad_fn is None
