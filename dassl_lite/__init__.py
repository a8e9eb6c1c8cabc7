"""dassl_lite: a small, fast, tested Dassl-style framework for prompt learning on CLIP."""
__version__ = "0.1.0"
