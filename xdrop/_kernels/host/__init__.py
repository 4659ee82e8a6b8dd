"""Host (CPU) fast paths on NumPy buffers: blocked NumPy and the compiled C kernel (src/)."""
