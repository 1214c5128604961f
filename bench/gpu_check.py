"""The GPU check's Python part (bench/gpu_check.sh runs it with --device cuda): our runtime on one device against
transformers on the same device, then the throughput workload, printed as one JSON object.

Steps, all on `--device` in `--dtype` (bfloat16 on CUDA, float32 on CPU by default):
1. refuse at once, in one line and exit status 2, when the device is not there (no CUDA device visible to PyTorch);
2. transformers' `generate` (greedy) on `--prompts` chat prompts: the reference token ids, then the model is freed so
   the server's memory sizing sees the device as it will be in production;
3. our server (`python -m runtime`) on the same model and dtype: the same prompts as token ids, greedy; each
   completion must equal the reference's text (special tokens' text left out, as bench/runtime_throughput.py does);
4. the prefix cache: one long prompt twice, the second must report cached prompt tokens;
5. throughput: `--requests` streamed completions from `--clients` concurrent clients, `--max-tokens` each
   (bench/runtime_throughput.py's tiny-workload load generator);
6. memory: the server's device memory (nvidia-smi, or its peak RSS on CPU) against its budget
   (GPU_MEMORY_UTILIZATION × the device's memory on CUDA), /info's `max_batch_total_tokens`, and the prefix-cache hit
   rate and KV usage from /metrics.
Exit status: 0 when every greedy completion matched and nothing failed, 1 otherwise (the JSON says what), 2 when the
device is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a concise assistant."},
     {"role": "user", "content": "Explain in two sentences why the sky is blue."}],
    [{"role": "user", "content": "Write a Python function that reverses a string."}],
    [{"role": "user", "content": "List three uses of copper."}],
    [{"role": "user", "content": "Summarize: The meeting moved to Tuesday because the room was booked."}],
    [{"role": "user", "content": "How many legs does a spider have?"}],
    [{"role": "user", "content": "Give a synonym for 'happy'."}],
    [{"role": "user", "content": "Translate 'good morning' into Spanish."}],
]


def fail(message: str, status: int) -> None:
    print(f"gpu_check: {message}", file=sys.stderr)
    sys.exit(status)


def check_device(device: str):
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        fail(f"FAIL: no CUDA device visible to PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}); "
             f"this check needs an NVIDIA GPU", 2)
    return torch


def reference(torch, model_dir: Path, device: str, dtype: str, prompts: list[list[int]], new_tokens: int) -> list:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=getattr(torch, dtype)).to(device).eval()
    outputs = []
    with torch.no_grad():
        for ids in prompts:
            input_ids = torch.tensor([ids], device=device)
            out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                                 do_sample=False, pad_token_id=model.generation_config.eos_token_id)
            outputs.append(out[0, len(ids):].tolist())
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return outputs


def server_memory_mib(pid: int, device: str) -> int | None:
    if device == "cuda":
        try:
            rows = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory",
                                   "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=30).stdout.splitlines()
        except (OSError, subprocess.SubprocessError):
            return None
        used = [int(used) for p, used in (row.split(",") for row in rows if "," in row) if int(p) == pid]
        return sum(used) if used else None
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return None


def metric(text: str, name: str) -> float | None:
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
              if line.startswith(name + " ") or line.startswith(name + "{")]
    return sum(values) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: the cached SmolLM2)")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default=None)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()
    torch = check_device(args.device)
    dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.model is None:
        from runtime.realmodels import SMOLLM2_135M_INSTRUCT, cached_model

        args.model = cached_model(SMOLLM2_135M_INSTRUCT.name)
    from transformers import AutoTokenizer

    from bench.runtime_throughput import _free_port, _load, _prompts, _server

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    chats = (PROMPTS * (args.prompts // len(PROMPTS) + 1))[: args.prompts]
    prompt_ids = [list(tokenizer.apply_chat_template(c, add_generation_prompt=True, return_dict=True)["input_ids"])
                  if tokenizer.chat_template else tokenizer(c[-1]["content"]).input_ids for c in chats]
    report: dict = {"device": args.device, "dtype": dtype, "model": str(args.model), "torch": torch.__version__}
    if args.device == "cuda":
        report["gpu"] = torch.cuda.get_device_name(0)
        free, total = torch.cuda.mem_get_info()
        report["gpu_memory_total_mib"] = total // 2**20
    started = time.monotonic()
    expected = reference(torch, args.model, args.device, dtype, prompt_ids, args.new_tokens)
    report["reference_s"] = round(time.monotonic() - started, 1)

    port = _free_port()
    env = {"MODEL_ID": str(args.model), "DTYPE": dtype, "HOSTNAME": "127.0.0.1", "PORT": str(port)}
    if args.device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # the CPU path even on a machine that has a GPU
    problems: list[str] = []
    started = time.monotonic()
    with _server([sys.executable, "-m", "runtime"], env, port, timeout=300) as (url, pid):
        report["server_start_s"] = round(time.monotonic() - started, 1)
        info = httpx.get(f"{url}/info", timeout=30).json()
        report["max_batch_total_tokens"] = info.get("max_batch_total_tokens")
        special = set(tokenizer.all_special_tokens)
        matches = []
        for ids, want in zip(prompt_ids, expected):
            got = httpx.post(f"{url}/v1/completions", timeout=300,
                             json={"prompt": ids, "max_tokens": args.new_tokens, "temperature": 0}).json()
            text = got["choices"][0]["text"]
            reference_text = tokenizer.decode(want, skip_special_tokens=True)
            for token in special:  # a server may print EOS's text; transformers' decode leaves it out
                text = text.replace(token, "")
            matches.append(text == reference_text)
            if text != reference_text:
                problems.append(f"greedy output differs from transformers: {text[:80]!r} != {reference_text[:80]!r}")
        report["greedy_identical"] = f"{sum(matches)}/{len(matches)}"

        # A runtime without the prefix cache (no such metric) is reported as such, not failed: the check also
        # serves builds from before it.
        caching = metric(httpx.get(f"{url}/metrics", timeout=30).text, "vllm:prefix_cache_queries_total") is not None
        long_prompt = prompt_ids[0] * max(1, 256 // len(prompt_ids[0]))
        usage = [httpx.post(f"{url}/v1/completions", timeout=300,
                            json={"prompt": long_prompt, "max_tokens": 1, "temperature": 0}).json().get("usage") or {}
                 for _ in range(2)]
        cached = (usage[1].get("prompt_tokens_details") or {}).get("cached_tokens")
        report["prefix_cache_repeat"] = {"exported": caching, "prompt_tokens": usage[1].get("prompt_tokens"),
                                         "cached_tokens": cached}
        if caching and not cached:
            problems.append("a repeated prompt reported no cached prompt tokens")

        load = asyncio.run(_load(url, _prompts(args.model, args.requests), clients=args.clients,
                                 max_tokens=args.max_tokens))
        load.pop("texts", None)
        report["throughput"] = {"requests": args.requests, "clients": args.clients, "max_tokens": args.max_tokens,
                                **load}
        metrics = httpx.get(f"{url}/metrics", timeout=30).text
        hits = metric(metrics, "vllm:prefix_cache_hits_total")
        queries = metric(metrics, "vllm:prefix_cache_queries_total")
        report["prefix_cache_hit_rate"] = round(hits / queries, 4) if hits is not None and queries else None
        report["kv_cache_usage_perc"] = metric(metrics, "vllm:kv_cache_usage_perc")
        report["preemptions"] = metric(metrics, "vllm:num_preemptions_total")
        used = server_memory_mib(pid, args.device)
        report["memory_used_mib"] = used
        if args.device == "cuda":
            fraction = float(os.environ.get("GPU_MEMORY_UTILIZATION", "0.9"))
            report["memory_budget_mib"] = int(report["gpu_memory_total_mib"] * fraction)
            if used is not None and used > report["memory_budget_mib"]:
                problems.append(f"the server uses {used} MiB, over its budget of {report['memory_budget_mib']} MiB")
    report["problems"] = problems
    report["ok"] = not problems
    print(json.dumps(report, indent=2))
    sys.exit(0 if not problems else 1)


if __name__ == "__main__":
    main()
