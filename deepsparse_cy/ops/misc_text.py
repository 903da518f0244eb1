"""TfIdfVectorizer (numpy reference).

Tokens are mapped to small integer ids of the pool vocabulary; each candidate n-gram (for every
size and skip distance) is encoded as one int64 in base V+1 and looked up with searchsorted, so
counting is vectorised over the whole input instead of walking a trie token by token.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError, ShapeError
from .registry import Op, register


@register("TfIdfVectorizer", since=9)
class TfIdfVectorizer(Op):
    def __init__(self, node, ctx):
        super().__init__(node, ctx)
        a = node.attrs
        self.mode = a.get("mode")
        if self.mode not in ("TF", "IDF", "TFIDF"):
            raise InputError(f"TfIdfVectorizer: unknown mode {self.mode!r}")
        self.min_n = int(a["min_gram_length"])
        self.max_n = int(a["max_gram_length"])
        self.max_skip = int(a["max_skip_count"])
        counts = list(a["ngram_counts"])
        indexes = np.asarray(a["ngram_indexes"], np.int64)
        self.out_size = int(indexes.max()) + 1 if indexes.size else 0
        w = a.get("weights")
        self.weights = None if not w else np.asarray(w, np.float32)
        pool = a.get("pool_int64s")
        self.strings = not pool
        pool = list(pool) if pool else list(a.get("pool_strings") or [])
        vocab = {}
        for t in pool:
            vocab.setdefault(t, len(vocab) + 1)               # id 0 = not in the pool
        self.vocab = vocab
        self.base = len(vocab) + 1
        # per n-gram size: sorted codes and their output columns (a later duplicate wins)
        self.tables = {}
        ordinal = 0
        for i, start in enumerate(counts):
            n = i + 1
            end = counts[i + 1] if i + 1 < len(counts) else len(pool)
            grams = pool[start:end]
            k = len(grams) // n
            if self.min_n <= n <= self.max_n and k:
                ids = np.array([vocab[t] for t in grams[:k * n]], np.int64).reshape(k, n)
                codes = self._encode(ids)
                table = {}
                for c, col in zip(codes.tolist(), indexes[ordinal:ordinal + k].tolist()):
                    table[c] = col
                keys = np.array(sorted(table), np.int64)
                self.tables[n] = (keys, np.array([table[c] for c in keys.tolist()], np.int64))
            ordinal += k
        if self.base ** max(self.max_n, 1) >= 2 ** 62:
            raise InputError("TfIdfVectorizer: vocabulary too large for int64 n-gram codes")

    def _encode(self, ids):
        """(..., n) token ids -> (...) int64 codes."""
        mult = self.base ** np.arange(ids.shape[-1], dtype=np.int64)
        return (ids * mult).sum(axis=-1)

    def run(self, inputs, outs):
        X = inputs[0]
        if X.ndim == 0:
            X = X.reshape(1)
        if X.ndim > 2:
            raise ShapeError(f"TfIdfVectorizer: input must be [C] or [B, C], got {X.shape}")
        rows = X.reshape(1, -1) if X.ndim == 1 else X
        B, C = rows.shape
        if self.strings:
            ids = np.array([self.vocab.get(t, 0) for t in rows.reshape(-1).tolist()], np.int64)
        else:
            ids = np.array([self.vocab.get(int(t), 0) for t in rows.reshape(-1).tolist()], np.int64)
        ids = ids.reshape(B, C)
        freq = np.zeros((B, self.out_size), np.int64)
        for n, (keys, cols) in self.tables.items():
            # unigrams ignore the skip distance: count them once
            for skip in (range(1, 2) if n == 1 else range(1, self.max_skip + 2)):
                span = skip * (n - 1)
                if span >= C:
                    break
                starts = np.arange(C - span)
                win = ids[:, starts[:, None] + skip * np.arange(n)]          # (B, S, n)
                codes = self._encode(win)
                valid = (win > 0).all(axis=-1)
                pos = np.clip(np.searchsorted(keys, codes), 0, len(keys) - 1)
                hit = valid & (keys[pos] == codes)
                r, _ = np.nonzero(hit)
                np.add.at(freq, (r, cols[pos[hit]]), 1)
        f = freq.astype(np.float32)
        if self.mode == "TF":
            y = f
        elif self.mode == "IDF":
            y = np.where(freq > 0, self.weights if self.weights is not None else 1.0, 0).astype(np.float32)
        else:
            y = f * self.weights if self.weights is not None else f
        y = y.astype(np.float32)
        return [y[0] if X.ndim == 1 else y]
