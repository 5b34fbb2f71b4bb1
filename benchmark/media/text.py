"""Text front-end: the open_clip tokenizer of the model, truncated to max_words with EOT kept (spec §5).

Padding stays open_clip's id 0 rather than the authors' PAD=49410 row (spec §14): with a causal text encoder
and EOT pooling the retrieval feature cannot see padding either way.

Captions are tokenized where they are read (`CaptionTokens`), never a whole split up front: at 33 µs a caption,
a 1M-caption pre-training corpus would wait 33 s for its first batch and hold 256 MB of tokens in every process.
"""

from __future__ import annotations

import numpy as np
import torch


class Tokenizer:
    """Callable: list of captions -> long [B, max_words] ([SOT] tokens [EOT] 0-padding), truncated to keep EOT."""

    def __init__(self, clip_name: str, max_words: int) -> None:
        import open_clip

        from benchmark.model.clip4vla import register_configs

        register_configs()  # the tokenizer of a registered tiny config is looked up by name too
        self._tokenizer = open_clip.get_tokenizer(clip_name)
        self.max_words = max_words

    def __call__(self, captions: list[str], length: int | None = None) -> torch.Tensor:
        """[B, length] tokens, length max_words unless given (the decoder's captions take
        benchmark.model.decoder.caption_token_length(max_words)); no captions are [0, length]."""
        length = length or self.max_words
        if not captions:
            return torch.zeros(0, length, dtype=torch.long)
        return self._tokenizer(list(captions), context_length=length)

    def decode(self, ids: list[int]) -> str:
        """Token ids (without SOT/EOT) -> text; padding (id 0) is dropped."""
        return self._tokenizer.decode([i for i in ids if i != 0]).strip()


class CaptionTokens:
    """The tokens of a split's captions, computed where they are read: `[j]` tokenizes caption j alone ([length]),
    `[i:k]` those captions as one batch ([k - i, length]). open_clip tokenizes each text on its own, so the values
    equal tokenizing the whole split at once. Picklable (the tokenizer with it) for spawned DataLoader workers. The
    captions are held as a numpy StringDType array: forked workers read it without copying it (`items.StoredClips`)."""

    def __init__(self, captions: list[str], tokenizer: Tokenizer, length: int) -> None:
        self.captions = np.array(captions, dtype=np.dtypes.StringDType())
        self.tokenizer = tokenizer
        self.length = length

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int | slice) -> torch.Tensor:
        if isinstance(index, slice):
            return self.tokenizer(self.captions[index].tolist(), self.length)
        return self.tokenizer([str(self.captions[index])], self.length)[0]
