"""Benchmarks of the project (`python -m bench`, `make bench`) and the GPU check
(`python -m bench.gpu_check`). Not installed with the package: run from the repository root."""
