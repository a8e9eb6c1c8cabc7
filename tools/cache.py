#!/usr/bin/env python
"""Show or clear the on-disk cache of frozen image features.

    python tools/cache.py show [--dir DIR]
    python tools/cache.py clear [--dir DIR]

``clear`` deletes only the cache's own buckets and refuses a folder holding anything else
(see dassl_lite/data/cache_admin.py).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from dassl_lite.data.cache_admin import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
