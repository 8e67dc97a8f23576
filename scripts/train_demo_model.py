"""Train the embedded demo checkpoints: a byte-level BPE tokenizer, a small Llama target model and a draft model.

Input is the corpus that `scripts/build_demo_corpus.py` writes (corpus.jsonl + chat.jsonl). Steps:

1. Split documents and conversations into train / validation by a hash of their source (a pydoc topic or a
   top-level stdlib package), so no validation text was seen in training, not even as a chat answer.
2. Train a byte-level BPE tokenizer on the training split (or reuse one with --tokenizer), with special tokens for
   bos/eos/pad and the chat roles, and a jinja chat template that `trt_gateway/engine/chat_template.py` renders.
3. Train each model in --models on packed 1024-token blocks (documents as `<s> text </s>`, conversations rendered
   through the chat template), AdamW with warmup + cosine decay, evaluating on the validation split as it goes and
   keeping the weights with the lowest validation loss.
4. Save HF checkpoints (bf16 safetensors, config, generation config, tokenizer files) under --out/<model>/.

Seeds are fixed and deterministic algorithms requested (warn-only: on CUDA the cuDNN attention backward has no
deterministic kernel, so GPU reruns may differ in the last bits). Runs on CPU (slowly: ~20 s a target step on 2 cores)
or CUDA (bf16 autocast; ~100 s for the target on an H100). Progress is JSON lines on stdout.

The committed checkpoints in trt_gateway/assets/demo/ come from these defaults on one H100, with the corpus built by
Python 3.11.7 (build/demo_corpus/manifest.json records its hashes); each model folder's training.json has the numbers.

Usage:
    python scripts/train_demo_model.py --corpus build/demo_corpus --out trt_gateway/assets/demo
    python scripts/train_demo_model.py ... --tokenizer-only          # just step 2, into --tokenizer-out
    python scripts/train_demo_model.py ... --tokenizer DIR --models draft
"""

from __future__ import annotations

import os

# cuBLAS needs this set before CUDA starts for deterministic matmuls.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import argparse  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SEED = 1234
VAL_EVERY = 30  # one source (pydoc topic or top-level stdlib package) in this many is held out for validation
PAD, BOS, EOS = "<pad>", "<s>", "</s>"
ROLES = ("system", "user", "assistant")
SPECIAL_TOKENS = [PAD, BOS, EOS] + [f"<|{r}|>" for r in ROLES]  # ids 0..5, in this order

# Role-tagged turns, each ended by eos so that generation stops where a turn would end. Unknown roles are an error,
# not silently rendered: the gateway turns it into INVALID_ARGUMENT on `messages`.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('Unknown role: ' ~ message['role'] ~ ' (expected system, user or assistant)') }}"
    "{% endif %}"
    "{{ '<|' ~ message['role'] ~ '|>\\n' ~ message['content'] ~ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class ModelSpec:
    """Architecture and schedule of one model. bf16 size ~= 2 bytes x params (embeddings are tied)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    epochs: float
    lr: float
    batch_size: int  # sequences of SEQ_LEN tokens per optimiser step


VOCAB_SIZE = 8192
SEQ_LEN = 1024  # = max_position_embeddings: the model is trained at its full context
# Epochs come from a sweep on an H100 (target 16/24/32/40, draft 20/32): the corpus is ~0.9M tokens, so validation
# loss bottoms out after ~10 (target) and ~8.5 (draft) epochs whatever the schedule length, and these schedules gave
# the lowest validation loss at their best step, which is what gets saved.
SPECS = {
    # ~8.0M params, 16.0 MB in bf16: 8 layers, GQA 4 query heads over 2 kv heads.
    "target": ModelSpec(256, 704, 8, 4, 2, 64, epochs=16, lr=2e-3, batch_size=16),
    # ~2.4M params, 4.7 MB: same tokenizer, proposes tokens for speculative decoding.
    "draft": ModelSpec(192, 512, 2, 3, 1, 64, epochs=20, lr=3e-3, batch_size=16),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("build/demo_corpus"))
    parser.add_argument("--out", type=Path, default=Path("trt_gateway/assets/demo"))
    parser.add_argument("--tokenizer", type=Path, help="reuse this tokenizer folder instead of training one")
    parser.add_argument("--tokenizer-out", type=Path, default=Path("build/demo_tokenizer"),
                        help="where a newly trained tokenizer goes (it is also copied into each model folder)")
    parser.add_argument("--tokenizer-only", action="store_true")
    parser.add_argument("--models", default="target,draft")
    parser.add_argument("--epochs", type=float, help="override every model's epochs (smoke tests, sweeps)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (smoke tests)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    seed_everything(SEED)
    docs, chats = load_corpus(args.corpus)
    train_docs, val_docs = split(docs, "text")
    train_chats, val_chats = split(chats, "messages")
    log(event="corpus", train_docs=len(train_docs), val_docs=len(val_docs), train_chats=len(train_chats),
        val_chats=len(val_chats))

    tok_dir = args.tokenizer or args.tokenizer_out
    if args.tokenizer is None:
        started = time.time()
        train_tokenizer(train_docs + [m["content"] for c in train_chats for m in c]).save_pretrained(tok_dir)
        finish_tokenizer_files(tok_dir)
        log(event="tokenizer", seconds=round(time.time() - started, 1), path=str(tok_dir))
    if args.tokenizer_only:
        return
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)

    train_seqs = encode(tokenizer, train_docs, train_chats)
    val_blocks = pack(encode(tokenizer, val_docs, val_chats), SEQ_LEN + 1)
    log(event="tokens", train=sum(map(len, train_seqs)), val=val_blocks.numel(),
        bytes_per_token=round(sum(len(d.encode()) for d in train_docs) / sum(map(len, train_seqs[: len(train_docs)])), 2))

    for name in args.models.split(","):
        spec = SPECS[name]
        if args.epochs is not None:
            spec = ModelSpec(**{**asdict(spec), "epochs": args.epochs})
        model, stats = train(name, spec, tokenizer, train_seqs, val_blocks, args.device, args.max_steps)
        save(model, tokenizer, tok_dir, args.out / name, stats)
        sample(name, model, tokenizer, args.device)


# ---------------------------------------------------------------- data


def load_corpus(folder: Path) -> tuple[list[dict], list[dict]]:
    with (folder / "corpus.jsonl").open(encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    with (folder / "chat.jsonl").open(encoding="utf-8") as f:
        chats = [json.loads(line) for line in f]
    return docs, chats


def split(rows: list[dict], key: str) -> tuple[list, list]:
    """(train, validation) values of `key`. By a hash of the source name rather than position, so a new stdlib
    module moves no other text between the splits."""

    def held_out(row: dict) -> bool:
        digest = hashlib.sha256(row["source"].encode()).digest()
        return int.from_bytes(digest[:4], "big") % VAL_EVERY == 0

    return [r[key] for r in rows if not held_out(r)], [r[key] for r in rows if held_out(r)]


def encode(tokenizer, docs: list[str], chats: list[list[dict[str, str]]]) -> list[list[int]]:
    """Token ids per training item: `<s> doc </s>`, or a conversation as the chat template renders it."""
    tokenizer.model_max_length = 1 << 30  # items are longer than the context; pack() cuts them, so no warning
    seqs = [ids + [tokenizer.eos_token_id] for ids in tokenizer(docs, add_special_tokens=True)["input_ids"]]
    rendered = [tokenizer.apply_chat_template(c, tokenize=False) for c in chats]
    # The template already starts with bos, so the tokenizer must not add another.
    seqs += tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return seqs


def pack(seqs: list[list[int]], block: int) -> torch.Tensor:
    """Concatenate and cut into rows of `block` tokens (the ragged tail is dropped). Returns [rows, block] int64."""
    flat = torch.tensor([t for s in seqs for t in s], dtype=torch.long)
    rows = flat.numel() // block
    return flat[: rows * block].view(rows, block)


def epoch_blocks(seqs: list[list[int]], epoch: int) -> torch.Tensor:
    # A new document order each epoch moves the block boundaries too, so the model sees new contexts each time.
    order = list(range(len(seqs)))
    random.Random(SEED + epoch).shuffle(order)
    return pack([seqs[i] for i in order], SEQ_LEN + 1)


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    # Byte-level: every string is encodable (no <unk>) and a token may hold part of a UTF-8 character, which is why
    # the engine's detokenizer holds back incomplete characters.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Plain-text prompts get `<s>` in front, as the documents had in training.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=SPECIAL_TOKENS[3:],
        model_max_length=SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def finish_tokenizer_files(folder: Path) -> None:
    """Pin the layout the gateway reads: chat_template inside tokenizer_config.json, and special_tokens_map.json.

    Recent transformers write the template to chat_template.jinja and no special_tokens_map.json; older readers and
    our own chat_template.py look in tokenizer_config.json.
    """
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["chat_template"] = CHAT_TEMPLATE
    # The class name every transformers release knows (v5 maps it to its tokenizers backend); v4 reads the role
    # tokens from additional_special_tokens.
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["additional_special_tokens"] = SPECIAL_TOKENS[3:]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    special = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD, "additional_special_tokens": SPECIAL_TOKENS[3:]}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")


# ---------------------------------------------------------------- model


def build_model(spec: ModelSpec, tokenizer) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim,
        max_position_embeddings=SEQ_LEN,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config)


def train(name: str, spec: ModelSpec, tokenizer, train_seqs: list[list[int]], val_blocks: torch.Tensor, device: str,
          max_steps: int | None) -> tuple[LlamaForCausalLM, dict]:
    seed_everything(SEED)
    model = build_model(spec, tokenizer).to(device)
    params = sum(p.numel() for p in model.parameters())
    rows_per_epoch = epoch_blocks(train_seqs, 0).shape[0]
    steps_per_epoch = rows_per_epoch // spec.batch_size
    total = max(1, int(spec.epochs * steps_per_epoch))
    if max_steps is not None:
        total = min(total, max_steps)
    warmup = max(1, total // 20)
    eval_every = max(1, steps_per_epoch // 2)
    log(event="model", model=name, params=params, spec=asdict(spec), steps=total, steps_per_epoch=steps_per_epoch)

    # Weight decay on matrices only; norms' gains stay free.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=spec.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.startswith("cuda"))

    def lr_at(step: int) -> float:
        # Linear warmup, then cosine down to 10% of the peak.
        if step < warmup:
            return spec.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return spec.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))

    best = {"val_loss": float("inf"), "step": 0, "state": None}
    started, step, epoch, train_loss = time.time(), 0, 0, float("nan")
    while step < total:
        blocks = epoch_blocks(train_seqs, epoch)
        for i in range(0, blocks.shape[0] - spec.batch_size + 1, spec.batch_size):
            if step >= total:
                break
            batch = blocks[i: i + spec.batch_size].to(device)  # [B, SEQ_LEN + 1]
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with autocast(device):
                logits = model(input_ids=batch[:, :-1]).logits  # [B, T, V]
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), batch[:, 1:].flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            train_loss = loss.item() if step % 10 == 0 or step == total else train_loss
            if step % 10 == 0:
                log(event="step", model=name, step=step, epoch=round(step / steps_per_epoch, 2),
                    loss=round(train_loss, 4), lr=round(lr_at(step), 6), seconds=round(time.time() - started, 1))
            if step % eval_every == 0 or step == total:
                val_loss = evaluate(model, val_blocks, device)
                log(event="eval", model=name, step=step, epoch=round(step / steps_per_epoch, 2),
                    train_loss=round(train_loss, 4), val_loss=round(val_loss, 4))
                if val_loss < best["val_loss"]:
                    best = {"val_loss": val_loss, "step": step, "train_loss": train_loss,
                            "state": copy.deepcopy(model.state_dict())}
        epoch += 1

    # Keep the weights that generalised best: the corpus is small, so late epochs can memorise rather than learn.
    model.load_state_dict(best["state"])
    stats = {"model": name, "params": params, "steps": step, "best_step": best["step"],
             "val_loss": round(best["val_loss"], 4), "train_loss_at_best": round(best["train_loss"], 4),
             "final_train_loss": round(train_loss, 4), "seconds": round(time.time() - started, 1),
             "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu", "spec": asdict(spec)}
    log(event="done", **stats)
    return model, stats


@torch.no_grad()
def evaluate(model: LlamaForCausalLM, blocks: torch.Tensor, device: str, batch_size: int = 16) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, blocks.shape[0], batch_size):
        batch = blocks[i: i + batch_size].to(device)
        with autocast(device):
            logits = model(input_ids=batch[:, :-1]).logits
        total += torch.nn.functional.cross_entropy(
            logits.float().flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        count += batch[:, 1:].numel()
    model.train()
    return total / max(1, count)


def save(model: LlamaForCausalLM, tokenizer, tok_dir: Path, out: Path, stats: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model = model.to("cpu", dtype=torch.bfloat16)  # halves the committed size; the engine upcasts where it must
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tok_dir / f).resolve() != (out / f).resolve():
            shutil.copyfile(tok_dir / f, out / f)
    (out / "training.json").write_text(json.dumps(stats, indent=2) + "\n")


@torch.no_grad()
def sample(name: str, model: LlamaForCausalLM, tokenizer, device: str) -> None:
    model = model.to(device, dtype=torch.float32).eval()
    prompts = ["The for statement", "Return a list of"]
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "How does the `with` statement work?"}],
                                         tokenize=False, add_generation_prompt=True)
    for prompt, special in [(p, True) for p in prompts] + [(chat, False)]:
        ids = tokenizer(prompt, return_tensors="pt", add_special_tokens=special)["input_ids"].to(device)
        torch.manual_seed(SEED)
        for mode, kwargs in (("greedy", {"do_sample": False}), ("sampled", {"do_sample": True, "temperature": 0.8, "top_p": 0.95})):
            out = model.generate(ids, max_new_tokens=60, **kwargs)
            log(event="sample", model=name, mode=mode, prompt=prompt,
                text=tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=False))


# ---------------------------------------------------------------- plumbing


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast(
        "cpu", enabled=False)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def log(**fields: object) -> None:
    print(json.dumps(fields, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
