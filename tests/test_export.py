"""Exported models draw xdrop's masks: ONNX (ONNX Runtime), ``torch.export`` and ``jax.export``.

The ONNX tests compare ONNX Runtime's output with eager torch's bit for bit
(the eager layers are themselves tested against the NumPy backend in
``test_torch_layers.py``); models whose other operators round differently in
ONNX Runtime (a transformer's matmuls) are compared within a tolerance that is
far below what one different mask would change.
"""

from __future__ import annotations

import copy
import io
import sys

import numpy as np
import pytest

import xdrop

pytestmark = [
    pytest.mark.filterwarnings("ignore:Exporting a model while it is in training mode:UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]

STEPS = 3
HIGH_SEED = 2**63 + 12345  # held as a negative int64 in the buffer


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def _same(a, b):
    """The same bits, except that a NaN matches any NaN (the stream spec leaves a NaN's sign and payload open)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    nan = np.isnan(a)
    return np.array_equal(nan, np.isnan(b)) and np.array_equal(_bits(a)[~nan], _bits(b)[~nan])


def _onnx():
    pytest.importorskip("onnxscript", reason="ONNX export needs onnxscript (the onnx test extra)")
    return pytest.importorskip("onnxruntime", reason="running an exported model needs onnxruntime")


def _session(ort, program):
    options = ort.SessionOptions()
    options.log_severity_level = 3  # not the warning that the state inputs have defaults (they are meant to)
    return ort.InferenceSession(program.model_proto.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _state_names(program):
    return [v.name for v in program.model.graph.inputs if v.name.endswith((".seed", ".step"))]


def _family():
    """Every xdrop.torch layer, each on the input reshaped to a rank it takes without a warning."""
    import torch

    import xdrop.torch as xt

    class Family(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.plain = xt.Dropout(0.4, seed=HIGH_SEED)
            self.d1 = xt.Dropout1d(0.3, seed=12)
            self.d2 = xt.Dropout2d(0.5, seed=13)
            self.d3 = xt.Dropout3d(0.4, seed=14)
            self.alpha = xt.AlphaDropout(0.2, seed=15)
            self.feature_alpha = xt.FeatureAlphaDropout(0.4, seed=16)
            self.path = xt.DropPath(0.4, seed=17)
            self.path_unscaled = xt.DropPath(0.4, scale_by_keep=False, seed=18)
            self.odd_p = xt.Dropout(0.1234567, seed=19)
            self.keep_all = xt.Dropout(0.0, seed=20)
            self.drop_all = xt.Dropout(1.0, seed=21)

        def forward(self, x):
            n, c = x.shape[:2]
            return (
                self.plain(x),
                self.d1(x.reshape(n, c, -1)),
                self.d2(x.reshape(n, c, -1, x.shape[-1])),
                self.d3(x),
                self.alpha(x),
                self.feature_alpha(x.reshape(n, c, -1, x.shape[-1])),
                self.path(x),
                self.path_unscaled(x),
                self.odd_p(x),
                self.keep_all(x),
                self.drop_all(x),
            )

    return Family().train()


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "bfloat16"])
def test_onnx_runtime_draws_eager_torchs_masks_bit_for_bit(dtype):
    """Each layer of the dropout family, exported in training mode: ONNX Runtime at step s gives
    the bits of eager torch's s-th training forward. (bfloat16, which ONNX Runtime's Python API does not
    take, runs inside a model whose input and outputs are float32: the casts are exact.)"""
    ort = _onnx()
    import torch

    import xdrop.torch as xt

    family = _family()
    model = family if dtype != "bfloat16" else _in_float32(family, torch.bfloat16)
    x = torch.randn(4, 6, 2, 3, 5, generator=torch.Generator().manual_seed(0))
    x = x.to(getattr(torch, dtype)) if dtype != "bfloat16" else x.to(torch.bfloat16).float()
    x[0, :, 0, 0, :] = -0.0  # -0 kept and dropped: its bits stay (ONNX Runtime's Where loses -0 in one operand)
    x[1, 0, 0, 0, :3] = torch.tensor([float("inf"), -float("inf"), float("nan")])
    eager = copy.deepcopy(model)
    program = xt.onnx_export(model, (x,))
    assert family.plain.step.item() == 0, "exporting advanced a layer's step"
    names = _state_names(program)
    prefix = "" if model is family else "family."
    assert sorted(names) == sorted(f"{prefix}{m}.{b}" for m, _ in family.named_children() for b in ("seed", "step"))
    session = _session(ort, program)
    feed_name = session.get_inputs()[0].name
    for step in range(STEPS):
        with torch.no_grad():
            expected = [t.numpy() for t in eager(x)]
        steps = {n: np.array(step, dtype=np.int64) for n in names if n.endswith(".step")}
        got = session.run(None, {feed_name: x.numpy(), **steps})
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert _same(g, e), f"output {i} ({list(dict(family.named_children()))[i]}) differs at step {step}"


def _in_float32(module, dtype):
    """``module`` run in ``dtype`` between float32 input and outputs."""
    import torch

    class InFloat32(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.family = module

        def forward(self, x):
            return tuple(t.float() for t in self.family(x.to(dtype)))

    return InFloat32()


@pytest.mark.parametrize(("a", "b", "c"), [(2.0, 0.0, -0.0), (1.5, -0.25, -0.0), (0.5, 0.125, -1.75), (1.0, 0.0, 3.0)])
def test_onnx_affine_form_keeps_every_constant_s_bits(a, b, c):
    """The operator's affine form ``where(keep, x * a + b, c)`` called directly, a constant ``c = -0`` included
    (the family's layers make one only in float16 edge cases)."""
    ort = _onnx()
    import torch

    import xdrop.torch as xt

    class Affine(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("seed_step", torch.tensor([-5, 9], dtype=torch.int64))

        def forward(self, x):
            return torch.ops.xdrop.dropout(x, self.seed_step, 2**31 + 7, [x.shape[0], 1], a, b, c, "auto")

    model = Affine()
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(6))
    x[:, 0] = -0.0
    program = xt.onnx_export(model, (x,))
    assert _state_names(program) == [] and [v.name for v in program.model.graph.inputs] == ["x", "seed_step"]
    session = _session(ort, program)
    for pair in ([-5, 9], [7, -1]):
        state = torch.tensor(pair, dtype=torch.int64)
        (got,) = session.run(None, {"x": x.numpy(), "seed_step": state.numpy()})
        assert _same(got, torch.ops.xdrop.dropout(x, state, 2**31 + 7, [6, 1], a, b, c, "auto").numpy())


def test_onnx_dynamic_batch_size_draws_each_size_s_masks():
    """Exported with a dynamic batch dimension, the graph computes the mask's size: at batch sizes other
    than the example's, ONNX Runtime gives eager's bits."""
    ort = _onnx()
    import torch

    import xdrop.torch as xt

    model = torch.nn.Sequential(xt.Dropout(0.3, seed=HIGH_SEED), xt.Dropout2d(0.5, seed=8)).train()
    batch = torch.export.Dim("batch")
    program = xt.onnx_export(model, (torch.ones(3, 4, 5, 6),), dynamic_shapes=({0: batch},))
    session = _session(ort, program)
    for n in (1, 2, 7):
        x = torch.randn(n, 4, 5, 6, generator=torch.Generator().manual_seed(n))
        eager = copy.deepcopy(model)
        with torch.no_grad():
            eager(x)  # step 0
            expected = eager(x).numpy()  # step 1
        steps = {"0.step": np.array(1, dtype=np.int64), "1.step": np.array(1, dtype=np.int64)}
        (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy(), **steps})
        assert _same(got, expected), f"batch size {n}"


def test_onnx_state_defaults_are_the_buffers_at_export():
    """Run without feeding the state: the masks of the layers' current step (here 5, after five forwards)."""
    ort = _onnx()
    import torch

    import xdrop.torch as xt

    model = torch.nn.Sequential(xt.Dropout(0.5, seed=HIGH_SEED), torch.nn.ReLU(), xt.Dropout(0.3, seed=2)).train()
    x = torch.randn(7, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for _ in range(5):
            model(x)
    program = xt.onnx_export(model, (x,))
    assert _state_names(program) == ["0.seed", "0.step", "2.seed", "2.step"]
    session = _session(ort, program)
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    # The same from the model's torch.export program.
    from_program = xt.onnx_export(torch.export.export(model, (x,)), (x,))
    assert _state_names(from_program) == ["0.seed", "0.step", "2.seed", "2.step"]
    (got_from_program,) = _session(ort, from_program).run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model(x).numpy()  # the step-5 forward
    assert _same(got, expected)
    assert _same(got_from_program, expected)
    # Another seed, fed: the masks of that seed.
    (other,) = session.run(None, {session.get_inputs()[0].name: x.numpy(), "0.seed": np.array(3, dtype=np.int64)})
    model[0].seed.fill_(3)
    model[0].step.fill_(5)
    model[2].step.fill_(5)
    with torch.no_grad():
        assert _same(other, model(x).numpy())


def test_eval_mode_exports_no_dropout_and_no_state_inputs():
    ort = _onnx()
    import torch

    import xdrop.torch as xt

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), xt.Dropout(0.5, seed=1)).eval()
    program = xt.onnx_export(model, (torch.ones(2, 4),))
    assert _state_names(program) == []
    assert not any(node.op_type in ("BitwiseXor", "Dropout") for node in program.model.graph)
    session = _session(ort, program)
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_plain_torch_onnx_export_says_to_use_the_helper():
    """Without xdrop's translation, torch.onnx.export fails naming xdrop.torch.onnx_export (not a bare
    'no ONNX function found')."""
    _onnx()
    import torch

    import xdrop.torch as xt

    model = torch.nn.Sequential(xt.Dropout(0.5, seed=1)).train()
    with pytest.raises(Exception, match=r"xdrop\.torch\.onnx_export"):
        torch.onnx.export(model, (torch.ones(2, 4),), dynamo=True)


@pytest.mark.parametrize("name", ["f", "dynamo"])
def test_onnx_export_refuses_arguments_it_sets(name):
    _onnx()
    import torch

    import xdrop.torch as xt

    model = torch.nn.Sequential(xt.Dropout(0.5, seed=1))
    with pytest.raises(TypeError, match=f"no {name}= argument"):
        xt.onnx_export(model, (torch.ones(2),), **{name: "model.onnx"})


def test_import_does_not_import_onnx():
    """``import xdrop.torch`` imports no ONNX package (onnx_export imports them when called)."""
    pytest.importorskip("torch", reason="xdrop.torch needs torch")
    import subprocess

    code = (
        "import sys, xdrop, xdrop.torch; "
        "print(sorted(m for m in ('onnx', 'onnxscript', 'onnx_ir', 'onnxruntime') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_transformers_bert_exports_with_its_dropouts():
    """A converted BERT (small config) in training mode, hidden and attention dropout: ONNX Runtime's output
    at step s is eager's s-th forward's, to float32 matmul rounding; a wrong mask (another step) is far
    outside that."""
    ort = _onnx()
    import torch

    import xdrop.torch as xt

    transformers = pytest.importorskip("transformers", reason="needs transformers")
    torch.manual_seed(0)
    config = transformers.BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        vocab_size=64,
        max_position_embeddings=32,
        attention_probs_dropout_prob=0.3,
        hidden_dropout_prob=0.2,
    )
    model = xt.replace_dropout(transformers.BertModel(config), seed=5).train()
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(3))
    eager = copy.deepcopy(model)
    program = xt.onnx_export(model, (ids,))
    names = [n for n in _state_names(program) if n.endswith(".step")]
    attention = [n for n in names if "xdrop_attention" in n]
    assert len(names) - len(attention) == 1 + 2 * 2  # the embeddings' and each layer's two hidden dropouts
    assert len(attention) == 2  # each layer's attention stream
    session = _session(ort, program)
    outs = []
    for step in range(STEPS):
        with torch.no_grad():
            expected = eager(ids).last_hidden_state.numpy()
        feed = {session.get_inputs()[0].name: ids.numpy(), **{n: np.array(step, dtype=np.int64) for n in names}}
        got = session.run(None, feed)[0]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
        outs.append(got)
    assert np.abs(outs[0] - outs[1]).max() > 0.1  # the masks matter far beyond the tolerance


@pytest.mark.parametrize("is_causal", [False, True])
# The operator's bias forms over q's 2 * 3 rows: (Nb, Lb, Sb), each batch's to its 3 heads; (Bo, Bi, Lb, Sb)
# varying by batch (a padding mask), by head (T5's position bias), or by both.
@pytest.mark.parametrize("bias_shape", [None, (2, 1, 7), (2, 1, 1, 7), (1, 3, 5, 7), (2, 3, 5, 7)])
def test_onnx_attention_drops_eager_torchs_weights(is_causal, bias_shape):
    """``torch.ops.xdrop.attention`` with ``v`` the identity, so the output is the dropped weights: ONNX
    Runtime zeroes exactly eager's weights and agrees with its values and log-sum-exps to float32 rounding."""
    ort = _onnx()
    import torch

    import xdrop.torch as xt

    class Attention(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("seed_step", torch.tensor([-3, 4], dtype=torch.int64))

        def forward(self, q, k, v, bias):
            return torch.ops.xdrop.attention(q, k, v, bias, self.seed_step, 0.4, 0.5, is_causal)

    gen = torch.Generator().manual_seed(7)
    q, k = torch.randn(6, 5, 4, generator=gen), torch.randn(6, 7, 4, generator=gen)
    v = torch.eye(7).expand(6, 7, 7).contiguous()
    bias = None if bias_shape is None else torch.randn(bias_shape, generator=gen)
    model = Attention()
    program = xt.onnx_export(model, (q, k, v, bias))
    session = _session(ort, program)
    given = [t for t in (q, k, v, bias) if t is not None]
    feed = {i.name: t.numpy() for i, t in zip(session.get_inputs(), given, strict=False)}
    for pair in ([-3, 4], [11, 0]):
        state = torch.tensor(pair, dtype=torch.int64)
        out, lse = session.run(None, {**feed, "seed_step": state.numpy()})
        model.seed_step.copy_(state)
        expected_out, expected_lse = (t.numpy() for t in model(q, k, v, bias))
        assert np.array_equal(out == 0, expected_out == 0)
        assert 0.3 < (expected_out == 0).mean() < 0.9
        np.testing.assert_allclose(out, expected_out, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lse, expected_lse, rtol=1e-5, atol=1e-6)


def test_torch_export_round_trip_advances_the_steps():
    """``torch.export`` of a training-mode model, saved and loaded: each call draws eager's next masks and
    advances the loaded module's step buffers as eager advances its layers'."""
    torch = pytest.importorskip("torch", reason="torch.export needs torch")
    import xdrop.torch as xt

    model = torch.nn.Sequential(
        torch.nn.Linear(6, 6), xt.Dropout(0.3, seed=HIGH_SEED), torch.nn.Linear(6, 6), xt.Dropout2d(0.5, seed=4)
    ).train()
    x = torch.randn(3, 6, 6, 6, generator=torch.Generator().manual_seed(4))
    eager = copy.deepcopy(model)
    exported = torch.export.export(model, (x,))
    buffer = io.BytesIO()
    torch.export.save(exported, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    for step in range(STEPS):
        with torch.no_grad():
            expected, got = eager(x), loaded(x)
        assert _same(got.numpy(), expected.numpy()), f"step {step}"
    assert loaded.get_buffer("1.step").item() == STEPS == eager[1].step.item()
    assert loaded.get_buffer("3.step").item() == STEPS == eager[3].step.item()


def test_jax_export_serialized_round_trip_equals_numpy():
    """``jax.export`` of a jitted dropout with a traced step: serialized, deserialized and called,
    the bits of NumPy's dropout at every step."""
    jax = pytest.importorskip("jax", reason="jax.export needs JAX")
    import jax.numpy as jnp
    from jax import export

    seed = 0x1234_5678_9ABC_DEF0
    x = np.random.default_rng(5).standard_normal((6, 7)).astype(np.float32)
    f = jax.jit(lambda a, step: xdrop.dropout(a, 0.3, seed=seed, step=step))
    exported = export.export(f)(jax.ShapeDtypeStruct(x.shape, jnp.float32), jax.ShapeDtypeStruct((), jnp.uint32))
    restored = export.deserialize(exported.serialize())
    for step in (0, 1, 7, 2**32 - 1):
        got = np.asarray(restored.call(jnp.asarray(x), jnp.uint32(step)))
        assert _same(got, xdrop.dropout(x, 0.3, seed=seed, step=step)), f"step {step}"


def test_jax_export_of_flax_attention_needs_host_kernel_false():
    """On the CPU the attention's custom calls do not serialize: ``jax.export`` says so, naming the target;
    with ``host_kernel=False`` the function exports and gives the same values."""
    pytest.importorskip("flax", reason="xdrop.flax needs flax")
    import jax
    import jax.numpy as jnp
    from jax import export

    import xdrop.flax
    from xdrop._kernels.jax import _attention_host

    q = jnp.asarray(np.random.default_rng(1).standard_normal((1, 8, 2, 16)), jnp.float32)
    spec = jax.ShapeDtypeStruct(q.shape, jnp.float32)

    def attend(q, host):
        return xdrop.flax.dot_product_attention(q, q, q, dropout_rate=0.5, seed=3, host_kernel=host)

    if _attention_host.routine(q, q, q, None, None) is not None:
        with pytest.raises(ValueError, match="xdrop_attention_fwd"):
            export.export(jax.jit(lambda q: attend(q, True)))(spec)
    exported = export.export(jax.jit(lambda q: attend(q, False)))(spec)
    restored = export.deserialize(exported.serialize())
    np.testing.assert_allclose(restored.call(q), attend(q, True), rtol=2e-5, atol=2e-5)
