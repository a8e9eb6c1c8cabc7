"""OpenAI CLIP's byte-level BPE tokenizer (vocabulary: ``bpe_simple_vocab_16e6.txt.gz``)."""
import functools
import gzip
import html
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import ftfy
import regex
import torch

__all__ = ["SimpleTokenizer", "default_tokenizer", "tokenize", "VOCAB_PATH", "SOT_TEXT", "EOT_TEXT"]

VOCAB_PATH = Path(__file__).with_name("bpe_simple_vocab_16e6.txt.gz")
SOT_TEXT = "<|startoftext|>"
EOT_TEXT = "<|endoftext|>"
_NUM_MERGES = 49152 - 256 - 2  # merges used by CLIP's 49408-token vocabulary
_PATTERN = (r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|"""
            r"""[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")


@functools.lru_cache(maxsize=None)
def byte_to_unicode() -> Dict[int, str]:
    """Map each byte to a printable unicode character (printable latin-1 bytes map to
    themselves, the others to characters from U+0100 on, in byte order)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + len(mapping) - len(printable))
    return mapping


def clean_text(text: str) -> str:
    """Fix mojibake (ftfy), unescape HTML twice, collapse whitespace, lower-case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return " ".join(text.split()).lower()


def _merge_pair(word: List[str], pair: Tuple[str, str]) -> List[str]:
    merged, i = [], 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            merged.append(word[i] + word[i + 1])
            i += 2
        else:
            merged.append(word[i])
            i += 1
    return merged


class SimpleTokenizer:
    """Byte-level BPE with CLIP's vocabulary; ``encode`` gives ids without SOT/EOT."""

    def __init__(self, bpe_path: Union[str, Path] = VOCAB_PATH):
        with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")[1:_NUM_MERGES + 1]
        merges = [tuple(line.split()) for line in lines]
        self.byte_encoder = byte_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        symbols = list(self.byte_encoder.values())
        vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
        vocab += [SOT_TEXT, EOT_TEXT]
        self.encoder = {token: i for i, token in enumerate(vocab)}
        self.decoder = dict(enumerate(vocab))
        self.bpe_ranks = {pair: i for i, pair in enumerate(merges)}
        self.sot_token = self.encoder[SOT_TEXT]
        self.eot_token = self.encoder[EOT_TEXT]
        self.vocab_size = len(vocab)
        self.pattern = regex.compile(_PATTERN, regex.IGNORECASE)
        self._cache = {SOT_TEXT: SOT_TEXT, EOT_TEXT: EOT_TEXT}

    def bpe(self, token: str) -> str:
        """Apply the BPE merges to one pre-token (already byte-mapped); space-separated pieces."""
        if token not in self._cache:
            word = list(token[:-1]) + [token[-1] + "</w>"]
            while len(word) > 1:
                pairs = list(zip(word, word[1:]))
                best = min(pairs, key=lambda p: self.bpe_ranks.get(p, _NUM_MERGES))
                if best not in self.bpe_ranks:
                    break
                word = _merge_pair(word, best)
            self._cache[token] = " ".join(word)
        return self._cache[token]

    def encode(self, text: str) -> List[int]:
        """Token ids of ``text`` (cleaned and lower-cased), without SOT/EOT."""
        ids = []
        for piece in self.pattern.findall(clean_text(text)):
            mapped = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(mapped).split(" "))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (word ends become spaces)."""
        text = "".join(self.decoder[int(i)] for i in ids)
        data = bytearray(self.byte_decoder[c] for c in text)
        return data.decode("utf-8", errors="replace").replace("</w>", " ")


@functools.lru_cache(maxsize=None)
def default_tokenizer() -> SimpleTokenizer:
    """The shared tokenizer with the packaged vocabulary (built on first use)."""
    return SimpleTokenizer()


def tokenize(texts: Union[str, Sequence[str]], context_length: int = 77,
             truncate: bool = False) -> torch.LongTensor:
    """Token ids [len(texts), context_length]: SOT, text, EOT, zero padding.

    A text longer than ``context_length`` (with SOT and EOT) raises ``ValueError`` naming it,
    unless ``truncate`` is set: then it is cut and its last token replaced by EOT.
    """
    tokenizer = default_tokenizer()
    texts = [texts] if isinstance(texts, str) else list(texts)
    result = torch.zeros(len(texts), context_length, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [tokenizer.sot_token, *tokenizer.encode(text), tokenizer.eot_token]
        if len(ids) > context_length:
            if not truncate:
                shown = text if len(text) <= 100 else text[:100] + "..."
                raise ValueError(f"text {shown!r} is {len(ids)} tokens long (with SOT/EOT), more "
                                 f"than context_length={context_length}; shorten it or pass "
                                 f"truncate=True")
            ids = ids[:context_length - 1] + [tokenizer.eot_token]
        result[row, :len(ids)] = torch.tensor(ids)
    return result
