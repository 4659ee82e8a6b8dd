"""CUDA fast paths: Triton kernels for torch, philox_dropout.c through NVRTC for CuPy."""
