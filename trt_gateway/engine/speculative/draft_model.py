"""The draft model: a small checkpoint sharing the target's vocabulary proposes tokens autoregressively.

It keeps its own paged KV cache with the same number of blocks as the target's and is indexed through the same
block tables, so block allocation, preemption and freeing need nothing extra: only the draft's progress is tracked
per sequence (`Sequence.num_draft_computed_tokens`). A proposal for k drafts is k passes:

1. catch up: compute every token the draft has not seen, through the pending one (usually 1-2 tokens: the last
   step's bonus or correction; the whole prompt the first time), and draw draft 1 from the last logits;
2. k - 1 single-token passes, each drawing the next draft.

Draft KV written for rejected drafts is simply not counted (`Scheduler.postprocess` lowers the progress to what
the target accepted) and is overwritten later, exactly like the target's.

Greedy requests draft the draft model's argmax. Sampled requests draw from the draft's softmax at the request's
temperature and return those distributions (q), which rejection sampling needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from trt_gateway.engine.engine_config import EngineConfigError
from trt_gateway.engine.forward_batch import Chunk, layout
from trt_gateway.engine.kv_cache import allocate_kv_cache, bytes_per_block
from trt_gateway.engine.loader import kernels_usable, load_model
from trt_gateway.engine.model_config import ModelConfig
from trt_gateway.engine.sampling.sampler import gumbel_noise
from trt_gateway.engine.scheduler import ScheduledSeq
from trt_gateway.engine.speculative.rejection import draft_key


class DraftModel:
    def __init__(
        self,
        path: str,
        target: ModelConfig,
        device: torch.device,
        dtype: torch.dtype,
        max_model_len: int,
        *,
        use_kernels: bool = False,
    ) -> None:
        try:
            self.model_cfg = ModelConfig.from_pretrained(path)
        except EngineConfigError as exc:
            raise EngineConfigError(exc.message, field="draft_model") from exc
        if self.model_cfg.vocab_size != target.vocab_size:
            raise EngineConfigError(
                f"the draft model's vocabulary has {self.model_cfg.vocab_size} tokens, the target's "
                f"{target.vocab_size}: a draft model must share the target's tokenizer",
                field="draft_model",
            )
        if self.model_cfg.max_position_embeddings < max_model_len:
            raise EngineConfigError(
                f"the draft model supports {self.model_cfg.max_position_embeddings} positions, fewer than "
                f"max_model_len={max_model_len}",
                field="draft_model",
            )
        self.path = path
        self.device = device
        self.dtype = dtype
        self.use_kernels = use_kernels and kernels_usable(device, self.model_cfg)  # its own head size may not fit
        self.model = load_model(path, self.model_cfg, device, dtype, max_model_len, use_kernels=self.use_kernels)
        self.kv_cache: torch.Tensor | None = None
        self.block_size = 0

    def bytes_per_block(self, block_size: int) -> int:
        return bytes_per_block(self.model_cfg, block_size, self.dtype)

    def allocate_cache(self, num_blocks: int, block_size: int) -> None:
        self.block_size = block_size
        # One block more than the block manager hands out, as for the target's cache (see ModelRunner).
        self.kv_cache = allocate_kv_cache(self.model_cfg, num_blocks + 1, block_size, self.dtype, self.device)
        for i, attn in enumerate(self.model.attention_layers()):
            attn.bind_cache(self.kv_cache[0, i], self.kv_cache[1, i])

    @torch.inference_mode()
    def propose(self, items: Sequence[ScheduledSeq]) -> torch.Tensor:
        """Write item.num_spec drafts into each item's seq.spec_token_ids. -> q: [S, K, V] float32, the
        distribution each draft of a sampled request was drawn from (rows of greedy requests are unused)."""
        num = [item.num_spec for item in items]
        width = max(num)
        vocab = self.model_cfg.vocab_size
        q = torch.zeros(len(items), width, vocab, dtype=torch.float32, device=self.device)
        drafts: list[list[int]] = [[] for _ in items]
        for j in range(width):
            live = [i for i, n in enumerate(num) if n > j]
            chunks = []
            for i in live:
                seq, start = items[i].seq, items[i].start
                if j == 0:  # catch up through the pending token (position `start`)
                    done = seq.num_draft_computed_tokens
                    chunks.append(Chunk(seq.token_ids[done : start + 1], done, seq.block_table, num_logits=1))
                else:
                    chunks.append(Chunk([drafts[i][-1]], start + j, seq.block_table, num_logits=1))
            batch = layout(chunks, self.block_size, self.device, batched_prefill=self.use_kernels)
            hidden = self.model(batch.input_ids, batch.positions, batch.meta)
            logits = self.model.compute_logits(hidden[batch.logit_rows])  # [L, V]
            tokens = self._draw(logits, [items[i] for i in live], j, q, live)
            for i, tok in zip(live, tokens, strict=True):
                drafts[i].append(tok)
        for item, toks in zip(items, drafts, strict=True):
            item.seq.spec_token_ids = toks
            item.seq.num_draft_computed_tokens = item.start + item.num_spec
        return q

    def _draw(
        self, logits: torch.Tensor, items: list[ScheduledSeq], j: int, q: torch.Tensor, rows: list[int]
    ) -> list[int]:
        params = [item.seq.request.sampling for item in items]
        greedy = torch.tensor([p.greedy for p in params], dtype=torch.bool, device=self.device)
        if bool(greedy.all()):
            return logits.argmax(dim=-1).tolist()
        temperature = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], device=self.device)
        probs = (logits / temperature[:, None]).softmax(dim=-1)
        keys = torch.tensor(
            [draft_key(item.seq.seed, item.seq.num_output_tokens + j) for item in items],
            dtype=torch.int64,
            device=self.device,
        )
        drawn = (probs.log() + gumbel_noise(keys, probs.shape[-1])).argmax(dim=-1)
        q[torch.tensor(rows, device=self.device), j] = probs
        return torch.where(greedy, logits.argmax(dim=-1), drawn).tolist()
