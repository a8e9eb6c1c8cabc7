#!/usr/bin/env python
"""Convert a trusted checkpoint into one that loads without running code.

    python tools/convert_checkpoint.py --trust IN_FILE OUT_FILE

dassl_lite reads every checkpoint with ``torch.load(weights_only=True)`` (plus an allow-list for
upstream Dassl's scheduler objects) and refuses files that need anything else. If you trust such a
file (you made it, or it comes from its authors), this tool loads it ONCE with full unpickling
(``weights_only=False``: this can run code from the file, hence ``--trust``), turns scheduler and
optimizer objects into their state dicts and NumPy arrays into tensors, drops anything else that
is not plain data (naming it), and writes OUT_FILE atomically, once the converted data is checked
to load with ``weights_only=True``. An existing OUT_FILE is replaced only with ``--force``; an
unreadable IN_FILE (truncated, corrupt, not a torch file) is an error that names it.
"""
import argparse
import io
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from dassl_lite.utils.io import atomic_write_bytes, check_writable_path  # noqa: E402
from dassl_lite.errors import DasslLiteError, load_error_reason  # noqa: E402
from dassl_lite.utils.safe_load import to_plain  # noqa: E402

PLAIN = (torch.Tensor, str, bytes, int, float, bool, complex, type(None), torch.dtype,
         torch.device, torch.Size)


def strip_unsafe(obj, where="", dropped=None):
    """``obj`` with everything that is not plain data removed (recorded in ``dropped``)."""
    dropped = [] if dropped is None else dropped
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, (str, int, float, bool, type(None))):
                out[k] = strip_unsafe(v, f"{where}[{k!r}]", dropped)
            else:
                dropped.append(f"{where} key of type {type(k).__name__}")
        return out
    if isinstance(obj, (list, tuple)):
        return type(obj)(strip_unsafe(v, f"{where}[{i}]", dropped) for i, v in enumerate(obj))
    if isinstance(obj, PLAIN):
        return obj
    dropped.append(f"{where or 'the file'}: {type(obj).__module__}.{type(obj).__qualname__}")
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("input", help="the checkpoint to convert (must be trusted)")
    p.add_argument("output", help="where to write the converted checkpoint")
    p.add_argument("--trust", action="store_true",
                   help="confirm you trust INPUT: it is unpickled in full, which can run code")
    p.add_argument("--force", action="store_true", help="replace an existing OUTPUT")
    args = p.parse_args(argv)
    problem = _check_args(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        obj = torch.load(args.input, map_location="cpu", weights_only=False)
    except Exception as e:  # a trusted file may still be cut short, damaged or not torch's
        print(f"error: cannot read {args.input}: {load_error_reason(e)}; expected a file "
              f"written by torch.save", file=sys.stderr)
        return 2
    dropped = []
    plain = strip_unsafe(to_plain(obj), dropped=dropped)
    buffer = io.BytesIO()
    torch.save(plain, buffer)
    buffer.seek(0)
    torch.load(buffer, map_location="cpu", weights_only=True)  # the point of converting
    atomic_write_bytes(args.output, buffer.getvalue())
    for item in dropped:
        print(f"dropped (not plain data): {item}")
    print(f"Wrote {args.output} (loads with weights_only=True)")
    return 0


def _check_args(args) -> str:
    """What is wrong with the arguments ("" when nothing)."""
    if not args.trust:
        return ("converting unpickles the whole file, which can run code from it; pass --trust if "
                "(and only if) you trust where it came from")
    if os.path.isdir(args.input):
        return f"{args.input} is a folder; expected a checkpoint file written by torch.save"
    if not os.path.isfile(args.input):
        return f"no such file: {args.input}"
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        return "write the converted file to a new path (OUTPUT must differ from INPUT)"
    if os.path.exists(args.output) and not args.force:
        return f"{args.output} exists; pass --force to replace it"
    try:
        check_writable_path(args.output)
    except DasslLiteError as e:
        return str(e)
    return ""


if __name__ == "__main__":
    sys.exit(main())
