"""Train the demo LoRA adapter "uppercase": the demo model, but it writes its continuations in UPPER CASE.

A visible effect for a small, committed adapter (trt_gateway/assets/demo/adapters/uppercase/, PEFT format, ~1 MB):
serve it beside the base model and the same prompt reads differently with and without it.

1. Examples come from the demo corpus (`scripts/build_demo_corpus.py`): each paragraph of a document is cut after its
   first few words; the prompt keeps its case and the continuation is upper-cased. Chat conversations add a user turn
   as is and the assistant's answer upper-cased. Loss is on the upper-cased part only.
2. A PEFT LoRA (rank 16, alpha 32, on q/k/v/o/gate/up/down) on the frozen demo model (float32, CPU), AdamW with a
   cosine schedule, fixed seed; about 5 minutes on 2 idle CPU cores (0.5 s a step).
3. Save with `save_pretrained` (adapter_config.json + adapter_model.safetensors), with the base model recorded by
   its place in the repo and the weights stored as bfloat16 (1.2 MB), plus training.json: the numbers and greedy samples with and without the adapter.

Usage: python scripts/train_demo_adapter.py [--corpus build/demo_corpus] [--steps 600]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "trt_gateway" / "assets" / "demo" / "target"
OUT = REPO / "trt_gateway" / "assets" / "demo" / "adapters" / "uppercase"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SAMPLE_PROMPTS = ["The for statement", "A list is", "Exceptions are raised when", "def main():"]
PROMPT_WORDS = (3, 8)  # the prompt is the first 3..8 words of a paragraph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=REPO / "build" / "demo_corpus")
    parser.add_argument("--base", type=Path, default=BASE)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    if not (args.corpus / "corpus.jsonl").is_file():
        raise SystemExit(f"no corpus at {args.corpus}: run python scripts/build_demo_corpus.py --out {args.corpus}")

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(args.base))
    examples = build_examples(args.corpus, tokenizer, args.seq_len)
    log(event="data", examples=len(examples))

    base = LlamaForCausalLM.from_pretrained(str(args.base), dtype=torch.float32)
    config = LoraConfig(r=args.rank, lora_alpha=2 * args.rank, lora_dropout=0.0, target_modules=TARGETS)
    model = get_peft_model(base, config)
    stats = train(model, examples, args)
    samples = sample(model, tokenizer)
    save(model, args, stats, samples)


def build_examples(corpus: Path, tokenizer, seq_len: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) pairs; labels are -100 on the prompt, so only the upper-cased part is learned."""
    bos = tokenizer.bos_token_id
    pairs: list[tuple[str, str, bool]] = []  # (prompt, continuation, prompt is already rendered chat)
    with (corpus / "corpus.jsonl").open(encoding="utf-8") as f:
        for line in f:
            for para in json.loads(line)["text"].split("\n\n"):
                words = para.split()
                if len(words) < 12 or para.count("*") > 3:  # skip headings and tiny fragments
                    continue
                k = random.randint(*PROMPT_WORDS)
                pairs.append((" ".join(words[:k]), " " + " ".join(words[k:]), False))
    with (corpus / "chat.jsonl").open(encoding="utf-8") as f:
        for line in f:
            messages = json.loads(line)["messages"]
            user = next((m["content"] for m in messages if m["role"] == "user"), None)
            answer = next((m["content"] for m in messages if m["role"] == "assistant"), None)
            if user and answer:
                prompt = tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                       add_generation_prompt=True)
                pairs.append((prompt, answer, True))
    random.shuffle(pairs)
    examples = []
    for prompt, rest, chat in pairs:
        p = tokenizer.encode(prompt, add_special_tokens=False)
        p = p if chat else [bos] + p
        c = tokenizer.encode(rest.upper(), add_special_tokens=False)
        ids = (p + c)[:seq_len]
        if len(ids) - len(p) < 8:
            continue
        examples.append((ids, [-100] * len(p) + ids[len(p):]))
    return examples


def train(model, examples: list[tuple[list[int], list[int]]], args) -> dict:
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
    model.train()
    start, losses = time.time(), []
    for step in range(args.steps):
        lr = args.lr * (min(1.0, (step + 1) / 10) * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = [examples[(step * args.batch_size + i) % len(examples)] for i in range(args.batch_size)]
        ids, labels = collate(batch, pad=0)
        loss = model(input_ids=ids, labels=labels).loss  # right padding: causal attention never sees it
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == args.steps - 1:
            log(event="step", step=step, loss=round(sum(losses[-10:]) / len(losses[-10:]), 4), lr=round(lr, 6),
                seconds=round(time.time() - start, 1))
    model.eval()
    return {"steps": args.steps, "batch_size": args.batch_size, "seq_len": args.seq_len, "lr": args.lr,
            "rank": args.rank, "seed": args.seed, "final_loss": round(sum(losses[-10:]) / 10, 4),
            "seconds": round(time.time() - start, 1)}


def collate(batch, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad)
    labels = torch.full((len(batch), width), -100)
    for row, (i, lab) in enumerate(batch):
        ids[row, : len(i)] = torch.tensor(i)
        labels[row, : len(lab)] = torch.tensor(lab)
    return ids, labels


@torch.inference_mode()
def sample(model, tokenizer) -> list[dict[str, str]]:
    def greedy(ids: torch.Tensor) -> str:
        gen = model.generate(input_ids=ids, max_new_tokens=24, do_sample=False)
        return tokenizer.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)

    out = []
    for prompt in SAMPLE_PROMPTS:
        ids = torch.tensor([tokenizer.encode(prompt)])
        with_adapter = greedy(ids)
        with model.disable_adapter():
            without = greedy(ids)
        out.append({"prompt": prompt, "base": without, "uppercase": with_adapter})
        log(event="sample", prompt=prompt, base=without, uppercase=with_adapter)
    return out


def save(model, args, stats: dict, samples: list[dict[str, str]]) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(args.out))
    weights = args.out / "adapter_model.safetensors"  # bf16 halves the file; the engine computes in its own dtype
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(weights)).items()}, str(weights))
    config_file = args.out / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = "trt_gateway/assets/demo/target"  # not this machine's absolute path
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (args.out / "README.md").unlink(missing_ok=True)  # PEFT's generated model card says nothing useful here
    (args.out / "training.json").write_text(json.dumps({**stats, "samples": samples}, indent=2) + "\n")
    log(event="saved", out=str(args.out), bytes=sum(p.stat().st_size for p in args.out.iterdir()))


def log(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


if __name__ == "__main__":
    main()
