"""JAX kernels: stream v1 compiled by jax.jit, and fused attention."""
