"""The BPE tokenizer against open_clip's copy of OpenAI's tokenizer."""
import re

import pytest
import torch

from dassl_lite.clip import default_tokenizer, tokenize

open_clip = pytest.importorskip("open_clip")

TEXTS = [
    "a photo of a cat.",
    "A PHOTO OF A Golden_Retriever, a type of pet.",
    "café crème brûlée",
    "cafÃ© au lait",  # mojibake that ftfy repairs
    "naïve coöperation — “quoted” ‘text’…",
    "🐶🐱 emoji 👍🏽 family 👨‍👩‍👧",
    "日本語のテキスト and 中文 and 한국어",
    "Ünïcödé Ελληνικά русский العربية",
    "1234567890 3.14159 1,000,000 $42 50% #1",
    "it's they're we've I'm you'll he'd can't",
    "punctuation!!! ??? ... --- ((brackets)) [x] {y} <z>",
    "html &amp; entities &lt;b&gt; &quot;q&quot; &amp;amp; &#39;",
    "   many    spaces\tand\ttabs\nand\nnewlines   ",
    "",
    "x",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "a centered satellite photo of Annual Crop Land.",
]
LONG = " ".join(["a photo of a very long and detailed description"] * 12)


def test_tokenize_matches_open_clip():
    ours = tokenize(TEXTS)
    assert ours.dtype == torch.long and ours.shape == (len(TEXTS), 77)
    assert torch.equal(ours, open_clip.tokenize(TEXTS))
    assert torch.equal(tokenize(TEXTS[0]), open_clip.tokenize([TEXTS[0]]))
    assert torch.equal(tokenize(TEXTS, context_length=40), open_clip.tokenize(TEXTS, context_length=40))


def test_encode_decode_match_open_clip():
    ours, theirs = default_tokenizer(), open_clip.tokenizer.SimpleTokenizer()
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text), text
        assert ours.decode(ids) == theirs.decode(ids)
    assert ours.encode("a photo of a cat.") == [320, 1125, 539, 320, 2368, 269]
    assert ours.encode("cafÃ© au lait") == ours.encode("Café  au lait")  # ftfy, case, spaces
    assert ours.encode("&amp;amp; &lt;b&gt;") == ours.encode("& <b>")  # unescaped twice
    assert (ours.vocab_size, ours.sot_token, ours.eot_token) == (49408, 49406, 49407)


def test_truncate_keeps_eot_last():
    tokens = tokenize([LONG, "short"], truncate=True)
    assert torch.equal(tokens, open_clip.tokenize([LONG, "short"]))
    assert tokens[0, -1].item() == 49407 and tokens[0, 0].item() == 49406
    assert (tokens[0] == 49407).sum() == 1


def test_too_long_raises_naming_the_text():
    n_tokens = 2 + len(default_tokenizer().encode(LONG))
    expected = (f"text {LONG[:100] + '...'!r} is {n_tokens} tokens long (with SOT/EOT), more than "
                f"context_length=77; shorten it or pass truncate=True")
    with pytest.raises(ValueError, match=re.escape(expected)):
        tokenize(["fine", LONG])
    with pytest.raises(ValueError, match=re.escape("text 'a photo of a cat.' is 8 tokens long")):
        tokenize("a photo of a cat.", context_length=5)
