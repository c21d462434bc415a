"""gmmssl benchmarks: ``python -m benchmarks [kernels|sweep|all]`` or ``gmmssl bench``."""
