"""A stand-in for torchvision, so that Once-for-All's network code imports without it (see
benchmarks/_ofa_standin/README.md). Only `bench_ofa.py` puts it on the path."""

STANDIN = True  # lets the benchmark tell this apart from a real torchvision
__version__ = "0+nasplat.standin"
