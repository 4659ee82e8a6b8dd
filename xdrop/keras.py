"""Keras 3 layers drawing xdrop's stream: the same bits under every Keras backend.

``import xdrop`` does not import this module; ``import xdrop.keras`` imports
Keras, so set ``KERAS_BACKEND`` to ``jax`` or ``torch`` first (Keras defaults
to TensorFlow). Keras hands a layer its backend's own tensors (JAX arrays, torch
tensors, NumPy arrays), and :func:`xdrop.dropout` takes each of them as they
are, so a layer gives the bits of ``xdrop.dropout(x, rate, seed=s, step=i)``
at its ``i``-th training call whichever backend runs it. Keras' own layers use
each backend's RNG: their masks differ between backends for the same seed.

The layers are registered with Keras (package ``"xdrop"``), so once
``xdrop.keras`` is imported ``keras.models.load_model(path)`` rebuilds them
with no ``custom_objects``. The seed is part of the layer's config
(``get_config``) and the step is a non-trainable ``uint32`` variable ``(low,
high)``, so a ``.keras`` or ``.weights.h5`` file restores both and a reloaded
model continues the same masks. Under the JAX backend the step is read and
advanced inside ``jit``; under the torch and NumPy backends, eagerly.

The step is stream state, as the state of Keras' ``SeedGenerator`` is: it is
in ``layer.variables`` but not in ``layer.weights``, so ``get_weights()`` and
``set_weights()`` take the lists of Keras' own layers, and a weights file
saved from a model with Keras' ``Dropout`` or ``MultiHeadAttention`` loads
into the same model built with xdrop's (each step keeps its value).
``layer.get_stream()`` returns ``(seed, step)`` as integers and
``layer.set_stream(seed, step)`` sets them (what ``xdrop.torch`` and
``xdrop.flax`` layers give and take, for porting a model).

:class:`MultiHeadAttention` is Keras' attention layer with its attention
dropout drawn the same way (over the ``(B, H, L, S)`` weights).
"""

from __future__ import annotations

import random
from typing import Any

import keras

from ._functional._dropout import dropout
from ._functional._variants import alpha_dropout
from ._lib._checks import check_probability, check_u64
from ._lib._traced import next_words
from ._lib._u64 import from_words, next_u64, to_words

__all__ = [
    "AlphaDropout",
    "Dropout",
    "MultiHeadAttention",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
]

# Registered as "xdrop>Dropout" and so on: load_model finds the classes once xdrop.keras is imported.
_serializable = keras.saving.register_keras_serializable(package="xdrop")


def _default_seed() -> int:
    # Python's random module: keras.utils.set_random_seed seeds it, so a script that
    # calls it gets the same seeds (and masks) on every run; nothing global is written.
    return random.getrandbits(64)


class _XdropLayer(keras.layers.Layer):  # type: ignore[misc]
    """Seed (config) and step (a ``uint32`` weight), training switch; subclasses draw."""

    def __init__(self, rate: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rate = check_probability(rate, "rate")
        self.seed = _default_seed() if seed is None else check_u64(seed, "seed")
        self.supports_masking = True
        self.step = self.add_weight(shape=(2,), dtype="uint32", initializer="zeros", trainable=False, name="step")

    def _seed_and_step(self) -> tuple[Any, Any]:
        step = self.step.value
        if keras.backend.backend() == "jax":  # traced words: jit reads and advances them
            import jax.numpy as jnp

            seed = jnp.asarray(to_words(self.seed), dtype=jnp.uint32)
            self.step.assign(next_words(step))
            return seed, step
        words = [int(w) for w in keras.ops.convert_to_numpy(step)]
        value = from_words(*words)
        self.step.assign(keras.ops.convert_to_tensor(to_words(next_u64(value)), dtype="uint32"))
        return self.seed, value

    def get_stream(self) -> tuple[int, int]:
        """The layer's ``(seed, step)`` as integers in ``[0, 2**64)``: the stream its next call draws.

        Examples
        --------
        >>> import keras, xdrop.keras
        >>> layer = xdrop.keras.Dropout(0.5, seed=2**63)
        >>> _ = layer(keras.ops.ones((4,)), training=True)
        >>> layer.get_stream()
        (9223372036854775808, 1)
        """
        low, high = (int(w) for w in keras.ops.convert_to_numpy(self.step.value))
        return self.seed, from_words(low, high)

    def set_stream(self, seed: int, step: int = 0) -> None:
        """Set the layer's ``(seed, step)``: its next training call draws ``(seed, step)``.

        Takes what :meth:`xdrop.torch.Dropout.get_stream` returns, so a layer
        ported from PyTorch continues the torch layer's masks. The seed is part of
        the config (``get_config``) and the step a weight, as at construction.

        Parameters
        ----------
        seed, step : int
            Integers in ``[0, 2**64)``.

        Examples
        --------
        >>> import keras, numpy as np
        >>> import xdrop, xdrop.keras
        >>> layer = xdrop.keras.Dropout(0.5, seed=0)
        >>> layer.set_stream(7, step=3)
        >>> out = keras.ops.convert_to_numpy(layer(keras.ops.ones((8,)), training=True))
        >>> bool((out == xdrop.dropout(np.ones(8, np.float32), 0.5, seed=7, step=3)).all())
        True
        """
        seed, step = check_u64(seed, "seed"), check_u64(step, "step")
        self.seed = seed
        self.step.assign(keras.ops.convert_to_tensor(to_words(step), dtype="uint32"))

    def _draw(self, inputs: Any, seed: Any, step: Any) -> Any:
        raise NotImplementedError

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or self.rate == 0.0:
            return inputs
        seed, step = self._seed_and_step()
        return self._draw(inputs, seed, step)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    @property
    def weights(self) -> list[Any]:
        """Keras' own layer's weights (none): the step is stream state, in ``variables`` only."""
        return [w for w in super().weights if w is not self.step]

    def load_own_variables(self, store: Any) -> None:
        """Restore the step; a Keras dropout layer's saved state (no variables) keeps it."""
        if len(store.keys()) == 0:
            return
        super().load_own_variables(store)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"rate": self.rate, "seed": self.seed})
        return config


def _resolve_noise_shape(noise_shape: Any, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if noise_shape is None:
        return None
    return tuple(shape[i] if n is None else n for i, n in enumerate(noise_shape))


@_serializable
class Dropout(_XdropLayer):
    """Drop-in ``keras.layers.Dropout`` with the same bits under every Keras backend.

    Parameters
    ----------
    rate : float
        Probability of dropping an element, in ``[0, 1]``.
    noise_shape : tuple, optional
        Keras' noise shape: one entry per axis, ``None`` or the axis size, or 1
        to share one decision along that axis.
    seed : int, optional
        A seed in ``[0, 2**64)``; by default drawn from Python's ``random``
        (seeded by ``keras.utils.set_random_seed``) at construction.
    **kwargs
        Passed to ``keras.layers.Layer``.

    Examples
    --------
    >>> import numpy as np, keras
    >>> import xdrop, xdrop.keras
    >>> layer = xdrop.keras.Dropout(0.5, seed=7)
    >>> out = layer(keras.ops.ones((8,)), training=True)
    >>> keras.ops.convert_to_numpy(out)
    array([0., 0., 2., 2., 2., 0., 2., 0.], dtype=float32)
    >>> bool((keras.ops.convert_to_numpy(layer(keras.ops.ones((8,)))) == 1).all())  # inference
    True
    """

    def __init__(self, rate: float, noise_shape: Any = None, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(rate, seed, **kwargs)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)

    def _draw(self, inputs: Any, seed: Any, step: Any) -> Any:
        shape = _resolve_noise_shape(self.noise_shape, tuple(inputs.shape))
        return dropout(inputs, self.rate, seed=seed, step=step, noise_shape=shape)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["noise_shape"] = self.noise_shape
        return config


@_serializable
class AlphaDropout(Dropout):
    """Drop-in ``keras.layers.AlphaDropout`` (see :func:`xdrop.alpha_dropout`).

    Parameters are those of :class:`Dropout`. Kept elements become ``a*x + b``
    and dropped ones ``a*alpha' + b``, which keeps SELU activations' mean and
    variance (PyTorch's and Keras' AlphaDropout).

    Examples
    --------
    >>> import numpy as np, keras, xdrop.keras
    >>> out = xdrop.keras.AlphaDropout(0.5, seed=7)(keras.ops.zeros((4,)), training=True)
    >>> np.round(keras.ops.convert_to_numpy(out), 4)
    array([-0.7792, -0.7792,  0.7792,  0.7792], dtype=float32)
    """

    def _draw(self, inputs: Any, seed: Any, step: Any) -> Any:
        shape = _resolve_noise_shape(self.noise_shape, tuple(inputs.shape))
        if shape is None:
            return alpha_dropout(inputs, self.rate, seed=seed, step=step)
        return alpha_dropout(inputs, self.rate, seed=seed, step=step, noise_shape=shape)


class _SpatialDropout(_XdropLayer):
    """One decision per (sample, channel), shared over the spatial axes."""

    spatial = 0

    def __init__(self, rate: float, data_format: str | None = None, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(rate, seed, **kwargs)
        fmt = keras.config.image_data_format() if data_format is None else data_format
        if fmt not in ("channels_first", "channels_last"):
            raise ValueError(
                f"data_format must be 'channels_first' or 'channels_last', got data_format={data_format!r}"
            )
        self.data_format = fmt

    def _draw(self, inputs: Any, seed: Any, step: Any) -> Any:
        shape = tuple(inputs.shape)
        if len(shape) != self.spatial + 2:
            raise ValueError(
                f"{type(self).__name__} expects inputs with {self.spatial + 2} dims, got inputs.shape={shape}"
            )
        ones = (1,) * self.spatial
        noise = (shape[0], *ones, shape[-1]) if self.data_format == "channels_last" else (*shape[:2], *ones)
        return dropout(inputs, self.rate, seed=seed, step=step, noise_shape=noise)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["data_format"] = self.data_format
        return config


@_serializable
class SpatialDropout1D(_SpatialDropout):
    """Drop-in ``keras.layers.SpatialDropout1D``: whole channels of ``(N, L, C)``.

    Keras' SpatialDropout1D is channels-last only; ``data_format`` is offered
    for ``(N, C, L)`` input too.

    Examples
    --------
    >>> import keras, xdrop.keras
    >>> out = xdrop.keras.SpatialDropout1D(0.5, seed=5)(keras.ops.ones((2, 3, 4)), training=True)
    >>> keras.ops.convert_to_numpy(out)[:, 0, :]
    array([[0., 2., 0., 0.],
           [2., 2., 0., 2.]], dtype=float32)
    """

    spatial = 1

    def __init__(self, rate: float, data_format: str = "channels_last", seed: int | None = None, **kwargs: Any):
        super().__init__(rate, data_format, seed, **kwargs)


@_serializable
class SpatialDropout2D(_SpatialDropout):
    """Drop-in ``keras.layers.SpatialDropout2D``: whole channels of 4-d input.

    ``data_format`` defaults to ``keras.config.image_data_format()``.
    """

    spatial = 2


@_serializable
class SpatialDropout3D(_SpatialDropout):
    """Drop-in ``keras.layers.SpatialDropout3D``: whole channels of 5-d input.

    ``data_format`` defaults to ``keras.config.image_data_format()``.
    """

    spatial = 3


@_serializable
class MultiHeadAttention(keras.layers.MultiHeadAttention):  # type: ignore[misc]
    """Drop-in ``keras.layers.MultiHeadAttention`` whose attention dropout has the same bits on every backend.

    Everything but the dropout of the attention weights is Keras' layer. The
    weights ``(B, H, L, S)`` of the ``i``-th training call are dropped as
    ``xdrop.dropout(weights, dropout, seed=seed, step=i)``: their keep
    decisions are ``xdrop.keep_mask((B, H, L, S), dropout, seed=seed, step=i)``
    under the jax, torch and numpy backends alike (Keras' own layer draws from
    each backend's RNG). The seed is in the config and the step is a
    non-trainable weight of the inner :class:`xdrop.keras.Dropout`, so a
    ``.keras`` file continues the masks.

    Parameters
    ----------
    *args, **kwargs
        Those of ``keras.layers.MultiHeadAttention``.
    seed : int, optional
        A seed in ``[0, 2**64)``; by default drawn as :class:`xdrop.keras.Dropout`
        draws it (Python's ``random``, seeded by ``keras.utils.set_random_seed``).

    Examples
    --------
    >>> import numpy as np, keras
    >>> import xdrop, xdrop.keras
    >>> mha = xdrop.keras.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.5, seed=7)
    >>> x = np.ones((1, 3, 8), np.float32)
    >>> _, scores = mha(x, x, return_attention_scores=True)
    >>> keras.ops.convert_to_numpy(scores).shape  # (B, H, L, S): the mask's shape
    (1, 2, 3, 3)
    >>> int(keras.ops.convert_to_numpy(mha(x, x, training=True)).shape[-1])
    8
    """

    def __init__(self, *args: Any, seed: int | None = None, **kwargs: Any) -> None:
        # Keras' layer would build its own Dropout with this seed (and refuses seeds >= 2**32): it gets none.
        super().__init__(*args, seed=None, **kwargs)
        self.xdrop_seed = _default_seed() if seed is None else check_u64(seed, "seed")

    def _build_attention(self, rank: int) -> None:
        super()._build_attention(rank)
        stock: Any = getattr(self, "_dropout_layer", None)
        self._dropout_layer = Dropout(self._dropout, seed=self.xdrop_seed, dtype=self.dtype_policy)
        layers = getattr(self, "_layers", None)  # untrack Keras' unused Dropout: no stray RNG state is saved
        if isinstance(layers, list) and stock in layers:
            layers.remove(stock)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["seed"] = self.xdrop_seed
        return config
