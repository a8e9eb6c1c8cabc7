"""Errors of the CLIP weight loaders (OpenAI checkpoints and open_clip weights)."""


class CLIPWeightsNotFoundError(FileNotFoundError):
    """A CLIP checkpoint is neither on disk nor downloadable; the message says how to fix it."""


class CLIPChecksumError(RuntimeError):
    """A downloaded checkpoint's SHA-256 differs from the published one."""
