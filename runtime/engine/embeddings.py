"""Sentence embeddings for encoder models (BertModel & co): mean pooling over the attention mask, L2-normalised,
as sentence-transformers does for all-MiniLM-style models (CLS pooling when the model's pooling config asks).

Encoders are cheap and requests are small, so there is no continuous batching here: each request's inputs are
one padded batch, run in a worker thread under a lock (torch releases the GIL).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


class EmbeddingEngine:
    def __init__(self, model: torch.nn.Module, tokenizer: Any, *, model_dir: str | None, max_input_tokens: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_input_tokens = max_input_tokens
        self.device = next(model.parameters()).device
        self.pooling = "mean"
        self.normalize = True
        if model_dir is not None:
            pooling_cfg = Path(model_dir) / "1_Pooling" / "config.json"
            if pooling_cfg.exists():
                cfg = json.loads(pooling_cfg.read_text())
                if cfg.get("pooling_mode_cls_token"):
                    self.pooling = "cls"
            modules = Path(model_dir) / "modules.json"
            if modules.exists():
                kinds = [m.get("type", "") for m in json.loads(modules.read_text())]
                self.normalize = any(k.endswith("Normalize") for k in kinds) or not kinds
        self._lock = threading.Lock()

    @property
    def dimensions(self) -> int:
        return int(self.model.config.hidden_size)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(texts)["input_ids"]]

    @torch.inference_mode()
    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_input_tokens, return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            hidden = self.model(**batch).last_hidden_state
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            if self.normalize:
                pooled = F.normalize(pooled.float(), p=2, dim=1)
            return pooled.float().cpu().tolist()
