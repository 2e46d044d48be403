"""Inversion methods, one per file. Installed as ``gan_inversion_bench.methods``."""
