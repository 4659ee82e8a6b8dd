"""Counter-based random bits: the generator under xdrop's stream.

The bit generator is kept apart from dropout, as ``numpy.random`` keeps bit
generators apart from distributions: :func:`philox4x32` is the Random123 block
function, exact on every standard namespace.
"""

from ._philox import philox4x32

__all__ = ["philox4x32"]
