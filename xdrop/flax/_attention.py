"""``xdrop.flax.dot_product_attention``: Flax's attention function with xdrop's attention dropout.

It takes the arguments of ``flax.nnx.dot_product_attention`` and
``flax.linen.dot_product_attention``, so it is the ``attention_fn`` of
``nnx.MultiHeadAttention`` and of linen's ``MultiHeadDotProductAttention``.
It runs the JAX kernel :func:`xdrop._kernels.jax._attention.attention`, whose
backward redraws the mask (out plus one log-sum-exp per row are saved).
"""

from __future__ import annotations

from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import nnx

from .._kernels.jax._attention import attention
from .._lib._checks import check_probability

__all__ = ["dot_product_attention", "dropout_seed"]


def dropout_seed(dropout_rng: jax.Array) -> jax.Array:
    """The seed :func:`dot_product_attention` draws with from a dropout key: ``(low, high)`` uint32 words.

    It is ``jax.random.bits(dropout_rng, (2,), jnp.uint32)``: a pure function
    of the key (any key type), as :class:`xdrop.flax.LinenDropout` takes its
    seed from ``make_rng``; the step is 0.

    Examples
    --------
    >>> import jax
    >>> import xdrop.flax
    >>> words = xdrop.flax.dropout_seed(jax.random.key(0))
    >>> words.shape, str(words.dtype)
    ((2,), 'uint32')
    """
    return jax.random.bits(dropout_rng, (2,), jnp.uint32)


def _sow(module: Any, weights: jax.Array) -> None:
    """Sow the (undropped) weights where Flax's own function does."""
    if isinstance(module, nnx.Module):
        module.sow(nnx.Intermediate, "attention_weights", weights)
    else:
        module.sow("intermediates", "attention_weights", weights)


def _weights(q: jax.Array, k: jax.Array, bias: Any, mask: Any, is_causal: bool) -> jax.Array:
    """Softmax weights (..., H, L, S), for sowing only: what the kernel computes without dropout."""
    s = jnp.einsum("...le,...se->...ls", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    if bias is not None:
        s = s + bias
    low = cast(Any, jnp.finfo)(s.dtype).min  # Flax's fill (finfo is untyped)
    if mask is not None:
        s = jnp.where(mask, s, low)
    if is_causal:
        s = jnp.where(jnp.tril(jnp.ones(s.shape[-2:], bool)), s, low)
    return jax.nn.softmax(s).astype(q.dtype)


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Any = None,
    is_causal: bool = False,
    *,
    seed: Any = None,
    step: Any = 0,
    host_kernel: bool = True,
) -> jax.Array:
    """Drop-in ``flax.nnx.dot_product_attention`` / ``flax.linen.dot_product_attention`` drawing xdrop's stream.

    Parameters
    ----------
    query, key, value : jax.Array
        ``(..., L, H, E)``, ``(..., S, Hk, E)``, ``(..., S, Hk, Ev)`` (Flax's
        layout; ``H`` a multiple of ``Hk``).
    bias, mask : jax.Array, optional
        Additive bias and boolean mask (True = attend), broadcastable to the
        weights ``(..., H, L, S)``. A query row with no key left attends to
        every key equally, as with Flax's ``finfo.min`` fill.
    broadcast_dropout : bool
        True (Flax's default): one ``(L, S)`` dropout mask shared by every
        batch index and head, ``keep_mask((L, S), ...)``. False: one over the
        weights, ``keep_mask((..., H, L, S), ...)``.
    dropout_rng : jax.Array, optional
        The dropout key; the seed is :func:`dropout_seed` of it, the step 0.
    dropout_rate : float
        Probability of dropping a weight.
    deterministic : bool
        No dropout when True.
    dtype : optional
        The dtype q, k, v are promoted to (Flax's meaning).
    precision : optional
        Accepted for Flax's signature; the kernel's matrix products use the
        backend's default precision.
    module : flax Module, optional
        Sow the undropped weights into its intermediates, as Flax does.
    is_causal : bool
        Key ``j`` takes part in query ``i``'s row only if ``j <= i``.
    seed, step : int or JAX integer, keyword-only
        An explicit seed and step instead of the key's (bind them with
        ``functools.partial``; traced ``uint32`` values work under ``jit``).
    host_kernel : bool, keyword-only
        On the CPU, run through the host kernel's compiled routine (two XLA
        custom calls) where it takes the call; False keeps XLA's operations,
        as ``jax.export`` needs. The bits are the same.

    Returns
    -------
    jax.Array
        ``(..., L, H, Ev)``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from flax import nnx
    >>> import xdrop.flax
    >>> def make():
    ...     return nnx.MultiHeadAttention(num_heads=2, in_features=8, dropout_rate=0.1, decode=False,
    ...                                   attention_fn=xdrop.flax.dot_product_attention, rngs=nnx.Rngs(0))
    >>> a, b = make(), make()
    >>> x = jnp.ones((1, 5, 8))
    >>> a(x, deterministic=False).shape
    (1, 5, 8)
    >>> bool((b(x, deterministic=False) == a(x, deterministic=True)).all())  # dropout changes the output
    False
    >>> bool((make()(x, deterministic=False) == make()(x, deterministic=False)).all())  # same keys: same masks
    True
    """
    rate = check_probability(dropout_rate, "dropout_rate")
    if dtype is None:
        dtype = jnp.result_type(query, key, value)
    query, key, value = (jnp.asarray(a, dtype) for a in (query, key, value))
    if query.ndim < 3 or key.ndim != query.ndim or value.ndim != query.ndim:
        raise ValueError(
            "query, key, value must be (..., L, H, E), (..., S, H, E), (..., S, H, Ev) of one rank, got shapes "
            f"query={tuple(query.shape)}, key={tuple(key.shape)}, value={tuple(value.shape)}"
        )
    q, k, v = (jnp.swapaxes(a, -3, -2) for a in (query, key, value))
    if module is not None:
        _sow(module, _weights(q, k, bias, mask, is_causal))
    train = not deterministic and rate > 0.0
    if train and seed is None:
        if dropout_rng is None:
            raise ValueError(
                "dropout_rng is required when dropout_rate > 0 and not deterministic "
                "(or pass seed= to draw from a fixed seed)"
            )
        seed, step = dropout_seed(dropout_rng), jnp.zeros(2, jnp.uint32)
    out = attention(
        q,
        k,
        v,
        bias,
        rate if train else 0.0,
        seed=seed if train else None,
        step=step if train else 0,
        is_causal=is_causal,
        mask=mask,
        shared_mask=broadcast_dropout,
        empty_rows="uniform",
        host_kernel=host_kernel,
        heads_inner=True,  # q, k, v are Flax's arrays with the axes swapped
    )
    return jnp.swapaxes(out, -3, -2)
