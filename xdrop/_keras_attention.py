"""``xdrop.keras.MultiHeadAttention``: Keras' layer with its attention dropout drawn from xdrop's stream."""

from __future__ import annotations

from typing import Any

import keras

from ._checks import check_u64

__all__ = ["MultiHeadAttention"]


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
        from .keras import _default_seed

        # Keras' layer would build its own Dropout with this seed (and refuses seeds >= 2**32): it gets none.
        super().__init__(*args, seed=None, **kwargs)
        self.xdrop_seed = _default_seed() if seed is None else check_u64(seed, "seed")

    def _build_attention(self, rank: int) -> None:
        from .keras import Dropout

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
