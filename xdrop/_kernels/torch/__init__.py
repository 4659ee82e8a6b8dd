"""Torch: CPU tensors through the host kernels, the registered operators, their ONNX form."""
