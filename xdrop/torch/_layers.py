"""The xdrop.torch layers: torch.nn's dropout family, each a variant of :class:`_SeededDropout`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from .._functional._variants import channel_noise_shape, feature_noise_shape, sample_noise_shape
from .._lib._checks import check_probability
from ._seeded import _SeededDropout


class Dropout(_SeededDropout):
    """Drop-in ``torch.nn.Dropout`` with a seed: the same masks on every device and backend.

    Parameters
    ----------
    p : float, optional
        Probability of dropping an element, in ``[0, 1]``.
    inplace : bool, optional
        Write the result into the input (as torch.nn.Dropout).
    seed : int or None, optional
        A seed in ``[0, 2**64)``; ``None`` draws one from torch's default
        generator, once, at construction (so ``torch.manual_seed`` reproduces
        it). Stored with the step in ``state_dict``. Layers given the same
        seed draw the same masks. ``get_stream()`` reads the seed and step
        back as unsigned integers, ``set_stream(seed, step)`` sets them.

    Examples
    --------
    >>> import torch
    >>> import xdrop, xdrop.torch
    >>> layer = xdrop.torch.Dropout(0.5, seed=7)
    >>> layer
    Dropout(p=0.5, inplace=False, seed=7, step=0)
    >>> layer(torch.ones(8))
    tensor([0., 0., 2., 2., 2., 0., 2., 0.])
    >>> layer.step
    tensor(1)
    >>> bool(layer.eval()(torch.ones(8)).eq(1).all())
    True
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)


class Dropout1d(_SeededDropout):
    """Drop-in ``torch.nn.Dropout1d``: whole channels of ``(N, C, L)`` or ``(C, L)``.

    Parameters
    ----------
    p : float, optional
        Probability of dropping a channel.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> xdrop.torch.Dropout1d(0.5, seed=5)(torch.ones(2, 3, 2))[:, :, 0]
    tensor([[0., 2., 0.],
            [0., 2., 2.]])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return channel_noise_shape(tuple(x.shape), 1, "dropout1d")


class Dropout2d(_SeededDropout):
    """Drop-in ``torch.nn.Dropout2d``: whole channels of ``(N, C, H, W)``.

    As ``torch.nn.Dropout2d`` 2.x: a 3-d input is read as ``(N, C, L)`` with
    torch's warning, other ranks >= 2 as ``(N, C, ...)`` with its deprecation
    warning (see :func:`xdrop.dropout2d`).

    Parameters
    ----------
    p : float, optional
        Probability of dropping a channel.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> xdrop.torch.Dropout2d(0.5, seed=5)(torch.ones(2, 3, 2, 2))[:, :, 0, 0]
    tensor([[0., 2., 0.],
            [0., 2., 2.]])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return channel_noise_shape(tuple(x.shape), 2, "dropout2d")


class Dropout3d(_SeededDropout):
    """Drop-in ``torch.nn.Dropout3d``: whole channels of ``(N, C, D, H, W)`` or ``(C, D, H, W)``.

    Parameters
    ----------
    p : float, optional
        Probability of dropping a channel.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> xdrop.torch.Dropout3d(0.5, seed=7)(torch.ones(4, 1, 1, 1)).flatten()
    tensor([0., 0., 2., 2.])
    """

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return channel_noise_shape(tuple(x.shape), 3, "dropout3d")


class AlphaDropout(_SeededDropout):
    """Drop-in ``torch.nn.AlphaDropout`` (see :func:`xdrop.alpha_dropout`).

    Parameters
    ----------
    p : float, optional
        Probability of dropping an element.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> xdrop.torch.AlphaDropout(0.5, seed=7)(torch.zeros(4, dtype=torch.float64))
    tensor([-0.7792, -0.7792,  0.7792,  0.7792], dtype=torch.float64)
    """

    _alpha = True

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)


class FeatureAlphaDropout(_SeededDropout):
    """Drop-in ``torch.nn.FeatureAlphaDropout``: alpha dropout of whole channels (axis 1).

    Parameters
    ----------
    p : float, optional
        Probability of dropping a channel.
    inplace : bool, optional
        Write the result into the input.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> out = xdrop.torch.FeatureAlphaDropout(0.5, seed=7)(torch.zeros(2, 2, 3))
    >>> bool((out == out[:, :, :1]).all())
    True
    """

    _alpha = True

    def __init__(self, p: float = 0.5, inplace: bool = False, *, seed: int | None = None) -> None:
        super().__init__(p, inplace, seed)

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return feature_noise_shape(tuple(x.shape), "feature_alpha_dropout")


class DropPath(_SeededDropout):
    """Drop-in ``timm.layers.DropPath`` (stochastic depth): whole samples of a residual branch.

    Parameters
    ----------
    drop_prob : float, optional
        Probability of dropping a sample (timm's name; 0 by default as in timm).
    scale_by_keep : bool, optional
        Scale kept samples by ``1 / keep`` (default), or leave them unscaled.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop.torch
    >>> layer = xdrop.torch.DropPath(0.5, seed=7)
    >>> layer
    DropPath(drop_prob=0.5, scale_by_keep=True, seed=7, step=0)
    >>> layer(torch.ones(4, 2))
    tensor([[0., 0.],
            [0., 0.],
            [2., 2.],
            [2., 2.]])
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True, *, seed: int | None = None) -> None:
        super().__init__(check_probability(drop_prob, "drop_prob"), False, seed)
        if not isinstance(scale_by_keep, bool):
            raise TypeError(f"scale_by_keep must be a bool, got scale_by_keep={scale_by_keep!r}")
        self.scale_by_keep = scale_by_keep

    @property
    def drop_prob(self) -> float:
        """timm's name for ``p``."""
        return self.p

    def _noise_shape(self, x: Tensor) -> tuple[int, ...] | None:
        return sample_noise_shape(tuple(x.shape), "drop_path")

    def extra_repr(self) -> str:
        return f"drop_prob={self.p}, scale_by_keep={self.scale_by_keep}, {self._state_repr()}"


class ScaledDotProductAttention(_SeededDropout):
    """``torch.nn.functional.scaled_dot_product_attention`` as a layer that keeps its dropout's seed and step.

    For hand-written attention: ``self.attention(q, k, v, is_causal=True)`` in
    place of ``F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)``.
    In training with ``dropout_p > 0`` it is :func:`xdrop.scaled_dot_product_attention`
    at the layer's ``(seed, step)``, and the step advances by one per call,
    as every xdrop.torch layer's (``state_dict``, checkpoint replay,
    ``torch.compile``: see :mod:`xdrop.torch`). In eval, or with
    ``dropout_p == 0``, it is torch's function, bit for bit.

    Parameters
    ----------
    dropout_p : float, optional
        Probability of dropping an attention weight, in ``[0, 1]``.
    seed : int or None, optional
        As in :class:`Dropout`.

    Examples
    --------
    >>> import torch, xdrop, xdrop.torch
    >>> attention = xdrop.torch.ScaledDotProductAttention(0.5, seed=7)
    >>> attention
    ScaledDotProductAttention(dropout_p=0.5, seed=7, step=0)
    >>> q = torch.ones(2, 3, 4)
    >>> out = attention(q, q, torch.eye(3).expand(2, 3, 3))  # v the identity: the output is the weights
    >>> keep = xdrop.keep_mask((2, 3, 3), 0.5, seed=7, step=0, xp=torch)
    >>> bool(((out != 0) == keep).all()), int(attention.step)
    (True, 1)
    """

    def __init__(self, dropout_p: float = 0.0, *, seed: int | None = None) -> None:
        super().__init__(check_probability(dropout_p, "dropout_p"), False, seed)

    @property
    def dropout_p(self) -> float:
        """torch's name for ``p``."""
        return self.p

    def forward(  # type: ignore[override]
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        scale: float | None = None,
        enable_gqa: bool = False,
    ) -> Tensor:
        if not (self.training and self.p > 0):
            out: Tensor = F.scaled_dot_product_attention(
                query, key, value, attn_mask, 0.0, is_causal, scale=scale, enable_gqa=enable_gqa
            )
            return out
        # The checks run before the step is taken: a refused call advances nothing.
        from .._functional._attention import _checked, attention_with_state

        _checked(query, key, value, attn_mask, self.p, is_causal, scale, True)
        result: Tensor = attention_with_state(query, key, value, attn_mask, self.p, is_causal, scale, self._take())
        return result

    def extra_repr(self) -> str:
        return f"dropout_p={self.p}, {self._state_repr()}"


_REPLACEMENTS: dict[type[nn.Module], type[_SeededDropout]] = {
    nn.Dropout: Dropout,
    nn.Dropout1d: Dropout1d,
    nn.Dropout2d: Dropout2d,
    nn.Dropout3d: Dropout3d,
    nn.AlphaDropout: AlphaDropout,
    nn.FeatureAlphaDropout: FeatureAlphaDropout,
}
