"""WikiText-2's token ids are computed once per tokenizer and text, and every evaluation still gets the same windows.

The real default model's tokenizer and the real WikiText-2 test text (no model load): the
windows equal a fresh tokenization of the whole text, a second call is served from the memo,
and a caller that writes into its windows cannot change what the next evaluation scores.
"""

from __future__ import annotations

import pytest
import torch

# the default model's tokenizer: on a machine without the converted model, resolving it converts the GGUF once
pytestmark = pytest.mark.slow


def test_windows_come_from_one_tokenization_and_equal_a_fresh_one(data_dir):
    from transformers import AutoTokenizer

    from benchmark.data.wikitext import load_wikitext_test
    from benchmark.evaluation.perplexity import _text_ids, window_token_ids
    from benchmark.models import DEFAULT_MODEL_ID, resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL_ID).path)
    text, _ = load_wikitext_test(data_dir)
    fresh = torch.tensor(tokenizer(text, verbose=False).input_ids, dtype=torch.long)

    _text_ids.cache_clear()
    first = window_token_ids(tokenizer, text, 32, 3)
    assert torch.equal(first, fresh[:96].view(3, 32))
    first.fill_(0)  # a caller writing into its windows
    second = window_token_ids(tokenizer, text, 64, 2)  # another profile's windows from the same tokenization
    assert torch.equal(second, fresh[:128].view(2, 64))
    info = _text_ids.cache_info()
    assert (info.misses, info.hits) == (1, 1)
    # the whole text's window count still comes from its full length
    assert window_token_ids(tokenizer, text, 512, None).shape == (fresh.numel() // 512, 512)
    # another text is tokenized on its own (its first window: the same tokens as the whole text's)
    assert torch.equal(window_token_ids(tokenizer, text[:2000], 16, 1), fresh[:16].view(1, 16))
    assert _text_ids.cache_info().misses == 2
