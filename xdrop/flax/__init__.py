"""Flax layers: NNX and linen dropout drawing xdrop's stream.

``import xdrop`` does not import this module; ``import xdrop.flax`` imports
JAX and Flax. Each layer gives the same bits as :func:`xdrop.dropout` on any
backend for the same seed and step, under ``jax.jit``, ``jax.grad``,
``nnx.scan`` and ``nnx.remat``, because the seed and step reach the JAX kernel
as traced ``uint32`` words ``(low, high)``.

- :class:`Dropout` (NNX) keeps its seed and step in :class:`DropoutState`
  variables: the step advances by one per training call, inside or outside
  ``nnx.jit``, and is saved with the rest of the model's state.
- :class:`LinenDropout` (linen) takes a fresh seed from ``make_rng`` at each
  call, as ``flax.linen.Dropout`` does, or, given ``seed=``, keeps a step in
  the ``"xdrop"`` collection: ``init`` leaves it at 0 and each training
  ``apply`` advances it, so ``apply`` must get ``mutable=["xdrop"]``.
- :func:`dot_product_attention` is the ``attention_fn`` of ``nnx.MultiHeadAttention``
  and linen's ``MultiHeadDotProductAttention`` with xdrop's attention dropout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import jax
import jax.numpy as jnp
from flax import linen, nnx

from .._functional._dropout import dropout
from .._lib._checks import check_probability, check_u64
from .._lib._traced import next_words
from .._lib._u64 import from_words, to_words
from ._attention import dot_product_attention, dropout_seed  # attention_fn for Flax's attention modules

__all__ = ["Dropout", "DropoutState", "LinenDropout", "dot_product_attention", "dropout_seed", "seed_words"]


def seed_words(value: int) -> jax.Array:
    """A 64-bit integer as the ``uint32`` pair ``(low, high)`` xdrop's JAX kernels read.

    Examples
    --------
    >>> import xdrop.flax
    >>> xdrop.flax.seed_words(2**32 + 5)
    Array([5, 1], dtype=uint32)
    """
    value = check_u64(value, "value")
    return jnp.asarray(to_words(value), dtype=jnp.uint32)


def _u64_of(words: jax.Array) -> int:
    """A concrete ``(low, high)`` uint32 pair as the integer it holds."""
    low, high = (int(w) for w in jax.device_get(words))
    return from_words(low, high)


def _traced(words: jax.Array) -> int:
    """A ``(low, high)`` word pair where the functional API takes a seed or step (it reads JAX pairs)."""
    return cast(int, words)


def _noise_shape(shape: tuple[int, ...], broadcast_dims: Sequence[int]) -> tuple[int, ...]:
    """Flax's ``broadcast_dims``: one decision shared along each listed axis."""
    ndim = len(shape)
    for d in broadcast_dims:
        if not -ndim <= d < ndim:
            raise ValueError(
                f"broadcast_dims must name axes of inputs (ndim={ndim}), got broadcast_dims={broadcast_dims!r}"
            )
    shared = {d % ndim for d in broadcast_dims}
    return tuple(1 if axis in shared else n for axis, n in enumerate(shape))


def _check_dims(broadcast_dims: Any) -> tuple[int, ...]:
    try:
        dims = tuple(broadcast_dims)
    except TypeError:
        dims = None
    if dims is None or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise TypeError(f"broadcast_dims must be a sequence of ints, got broadcast_dims={broadcast_dims!r}")
    return dims


def _check_deterministic(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise TypeError(
            f"deterministic must be True, False or None, got deterministic={value!r} of type {type(value).__name__}"
        )
    return value


def _key(rngs: Any, collection: str) -> jax.Array:
    """A key from what ``nnx.Dropout`` takes as ``rngs``: ``nnx.Rngs`` (its ``collection`` stream), a stream, a key."""
    if isinstance(rngs, nnx.Rngs):
        key: jax.Array = rngs[collection]()
        return key
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    if isinstance(rngs, jax.Array):
        return rngs
    raise TypeError(f"rngs must be an nnx.Rngs, an nnx.RngStream or a JAX key, got rngs of type {type(rngs).__name__}")


class DropoutState(nnx.Variable[jax.Array]):
    """The seed or step of an xdrop NNX layer: a ``(low, high)`` uint32 pair, not a parameter."""


class Dropout(nnx.Module):
    """Drop-in ``flax.nnx.Dropout`` drawing xdrop's stream: the same bits as :func:`xdrop.dropout`.

    Parameters
    ----------
    rate : float
        Probability of dropping an element, in ``[0, 1]``.
    broadcast_dims : sequence of int, optional
        Axes along which one decision is shared (as in Flax).
    deterministic : bool or None, optional
        If true, the layer is the identity (also settable per call, and by
        ``model.eval()`` / ``model.train()``). ``None``, as in ``nnx.Dropout``:
        each call must then say it (the call's argument or ``model.eval()`` /
        ``model.train()``).
    seed : int, optional
        A seed in ``[0, 2**64)``. If omitted, ``rngs`` must be given and the
        seed is drawn from it once, at construction, so ``nnx.Rngs(0)``
        reproduces the run.
    rng_collection : str, optional
        The stream of an ``nnx.Rngs`` the seed is drawn from.
    rngs : nnx.Rngs or nnx.RngStream, optional
        Random streams (``nnx.Rngs``, drawn from its ``rng_collection``
        stream) or one stream (such as ``rngs.dropout``), used only when
        ``seed`` is omitted.

    Notes
    -----
    The seed and step live in :class:`DropoutState` variables, so they are part
    of ``nnx.state(model)`` and a checkpoint restores the exact masks. The step
    advances by one per training call; call ``i`` of a layer with seed ``s``
    equals ``xdrop.dropout(x, rate, seed=s, step=i, noise_shape=...)``.
    A call given ``rngs=`` (a key, stream or ``nnx.Rngs``, as ``nnx.Dropout``
    takes) draws ``xdrop.dropout(x, rate, seed=dropout_seed(key), step=0)``
    instead and leaves the step as it is.

    Examples
    --------
    >>> import jax.numpy as jnp, numpy as np
    >>> import xdrop, xdrop.flax
    >>> layer = xdrop.flax.Dropout(0.5, seed=7)
    >>> layer(jnp.ones(8))
    Array([0., 0., 2., 2., 2., 0., 2., 0.], dtype=float32)
    >>> xdrop.dropout(np.ones(8, np.float32), 0.5, seed=7, step=0)
    array([0., 0., 2., 2., 2., 0., 2., 0.], dtype=float32)
    >>> int(layer.step[0])
    1
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        deterministic: bool | None = False,
        seed: int | None = None,
        rng_collection: str = "dropout",
        rngs: nnx.Rngs | nnx.RngStream | None = None,
    ) -> None:
        self.rate = check_probability(rate, "rate")
        self.broadcast_dims = _check_dims(broadcast_dims)
        self.deterministic = _check_deterministic(deterministic)
        self.rng_collection = rng_collection
        if seed is not None:
            words = seed_words(seed)
        elif rngs is not None:
            words = dropout_seed(_key(rngs, rng_collection))
        else:
            raise TypeError(
                "Dropout needs seed= (an int in [0, 2**64)) or rngs= (an nnx.Rngs or nnx.RngStream) "
                "to draw its seed from"
            )
        self.seed = DropoutState(words)
        self.step = DropoutState(jnp.zeros(2, jnp.uint32))

    def __call__(
        self,
        inputs: jax.Array,
        *,
        deterministic: bool | None = None,
        rngs: nnx.Rngs | nnx.RngStream | jax.Array | None = None,
    ) -> jax.Array:
        """Dropout of ``inputs`` in training mode; the identity when deterministic.

        ``rngs`` (a key, an ``nnx.RngStream`` or ``nnx.Rngs``) draws this call's
        mask from the key instead (seed ``dropout_seed(key)``, step 0) and
        leaves the layer's step as it is.
        """
        off = _check_deterministic(self.deterministic if deterministic is None else deterministic)
        if off is None:
            raise ValueError(
                "Dropout has deterministic=None and the call gave none: pass deterministic=True or False "
                "to the constructor or the call, or set it with model.eval() / model.train()"
            )
        if off or self.rate == 0.0:
            return inputs
        shape = _noise_shape(tuple(inputs.shape), self.broadcast_dims)
        if rngs is not None:
            seed = dropout_seed(_key(rngs, self.rng_collection))
            zero = jnp.zeros(2, jnp.uint32)
            return cast(
                jax.Array, dropout(inputs, self.rate, seed=_traced(seed), step=_traced(zero), noise_shape=shape)
            )
        step = self.step[...]
        out: jax.Array = dropout(
            inputs,
            self.rate,
            seed=_traced(self.seed[...]),
            step=_traced(step),
            noise_shape=shape,
        )
        self.step[...] = next_words(step)
        return out

    def get_stream(self) -> tuple[int, int]:
        """The layer's ``(seed, step)`` as integers in ``[0, 2**64)``: the stream its next call draws.

        The variables hold each value as a ``uint32`` pair ``(low, high)``; this
        joins them. Outside ``jit`` only (it reads concrete values).

        Examples
        --------
        >>> import jax.numpy as jnp
        >>> import xdrop.flax
        >>> layer = xdrop.flax.Dropout(0.5, seed=2**63)
        >>> _ = layer(jnp.ones(4))
        >>> layer.get_stream()
        (9223372036854775808, 1)
        """
        return _u64_of(self.seed[...]), _u64_of(self.step[...])

    def set_stream(self, seed: int, step: int = 0) -> None:
        """Set the layer's ``(seed, step)``: its next training call draws ``(seed, step)``.

        Takes what :meth:`xdrop.torch.Dropout.get_stream` returns, so a layer
        ported from PyTorch continues the torch layer's masks.

        Parameters
        ----------
        seed, step : int
            Integers in ``[0, 2**64)``.

        Examples
        --------
        >>> import jax.numpy as jnp, numpy as np
        >>> import xdrop, xdrop.flax
        >>> layer = xdrop.flax.Dropout(0.5, seed=0)
        >>> layer.set_stream(7, step=3)
        >>> bool((layer(jnp.ones(8)) == xdrop.dropout(np.ones(8, np.float32), 0.5, seed=7, step=3)).all())
        True
        """
        seed_pair, step_pair = seed_words(check_u64(seed, "seed")), seed_words(check_u64(step, "step"))
        self.seed[...] = seed_pair
        self.step[...] = step_pair

    def set_view(self, deterministic: bool | None = None, **_: Any) -> None:
        """``model.eval()`` / ``model.train()`` set ``deterministic`` (Flax's view protocol)."""
        if deterministic is not None:
            self.deterministic = deterministic


class LinenDropout(linen.Module):
    """Drop-in ``flax.linen.Dropout`` drawing xdrop's stream.

    Attributes
    ----------
    rate : float
        Probability of dropping an element.
    broadcast_dims : sequence of int
        Axes along which one decision is shared.
    deterministic : bool or None
        As in ``flax.linen.Dropout`` (may be passed to ``__call__`` instead).
    seed : int or None
        ``None`` (default): each call draws a seed from ``make_rng(rng_collection)``
        and uses step 0, like ``flax.linen.Dropout``. An int: a fixed seed and a
        step kept in the ``"xdrop"`` collection. ``init`` creates the step at 0
        without advancing it (as ``BatchNorm`` leaves its statistics), so the
        ``i``-th training ``apply`` draws step ``i``; each training ``apply``
        advances it by one and must get ``mutable=["xdrop"]`` (a ValueError
        otherwise: without it every call would draw the same mask).
    rng_collection : str
        The rng stream used when ``seed`` is ``None``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> import xdrop.flax
    >>> layer = xdrop.flax.LinenDropout(0.5, seed=7, deterministic=False)
    >>> out, state = layer.apply({}, jnp.ones(8), mutable=["xdrop"])
    >>> out
    Array([0., 0., 2., 2., 2., 0., 2., 0.], dtype=float32)
    >>> state["xdrop"]["step"]
    Array([1, 0], dtype=uint32)
    """

    rate: float
    broadcast_dims: Sequence[int] = ()
    deterministic: bool | None = None
    seed: int | None = None
    rng_collection: str = "dropout"

    @linen.compact
    def __call__(self, inputs: jax.Array, deterministic: bool | None = None) -> jax.Array:
        rate = check_probability(self.rate, "rate")
        off = linen.merge_param("deterministic", self.deterministic, deterministic)
        if off or rate == 0.0:
            return inputs
        shape = _noise_shape(tuple(inputs.shape), _check_dims(self.broadcast_dims))
        if self.seed is None:
            seed = jax.random.bits(self.make_rng(self.rng_collection), (2,), jnp.uint32)
            return cast(
                jax.Array,
                dropout(inputs, rate, seed=_traced(seed), step=_traced(jnp.zeros(2, jnp.uint32)), noise_shape=shape),
            )
        initializing = self.is_initializing()
        if not initializing and not self.is_mutable_collection("xdrop"):
            where = f" {'/'.join(self.path)!r}" if self.path else ""
            raise ValueError(
                f"LinenDropout{where} with seed={self.seed} advances its step in the "
                "'xdrop' collection at each training call: apply with mutable=['xdrop'] and pass the returned "
                "'xdrop' variables to the next call (or deterministic=True); without it every call would draw "
                "the same mask"
            )
        step = self.variable("xdrop", "step", lambda: jnp.zeros(2, jnp.uint32))
        out: jax.Array = dropout(
            inputs, rate, seed=_traced(seed_words(self.seed)), step=_traced(step.value), noise_shape=shape
        )
        if not initializing:  # init leaves the step at 0: the first training apply draws step 0
            step.value = next_words(step.value)
        return out
