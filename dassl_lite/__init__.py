"""dassl_lite: a small, fast, tested Dassl-style framework for prompt learning on CLIP."""
__version__ = "0.1.0"

from . import apps as _apps

_apps.install()  # trainers.x and dassl_lite.trainers.x are one module (see dassl_lite/apps.py)
