"""nasplat: one-shot neural architecture search; first job, ZoomNAS whole-body pose search."""

from nasplat.errors import NasplatError

__all__ = ["NasplatError", "__version__"]
__version__ = "0.1.0"
