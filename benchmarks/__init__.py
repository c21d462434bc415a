"""gmmssl benchmarks: ``python -m gmmssl.benchmarks [kernels|sweep|all]`` or ``gmmssl bench``."""
