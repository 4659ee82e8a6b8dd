"""Layers 1 to 4, under the public functions: base, words, stream rules, the argument gate."""
