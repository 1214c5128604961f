"""The baseline: a hand-rolled FastAPI server that calls ``model.generate`` once per request (the MLflow-serving
/ demo pattern), one request at a time under a lock. It streams tokens as ``generate`` produces them (through a
streamer) so time-to-first-token and inter-token latency are measured the same way as for our server.

Serves ``POST /v1/completions`` (``prompt`` as text or token ids, ``max_tokens``, ``stream``, ``ignore_eos``,
greedy) and ``GET /health``. Run: ``python bench/naive_server.py MODEL_DIR PORT``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.generation.streamers import BaseStreamer


class _QueueStreamer(BaseStreamer):
    """Hands each new token id to the event loop; the first ``put`` is the prompt, which we skip."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue) -> None:
        self.loop = loop
        self.queue = queue
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.loop.call_soon_threadsafe(self.queue.put_nowait, token)

    def end(self) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, None)


def create_app(model_dir: str) -> FastAPI:
    torch.set_num_threads(torch.get_num_threads())
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    lock = asyncio.Lock()
    app = FastAPI()

    @app.get("/health")
    async def health():
        return {}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        prompt = body["prompt"]
        ids = prompt if isinstance(prompt, list) else tokenizer(prompt).input_ids
        max_tokens = int(body.get("max_tokens", 16))
        min_tokens = max_tokens if body.get("ignore_eos") else 0
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        async def run():
            async with lock:
                def work():
                    with torch.inference_mode():
                        model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, min_new_tokens=min_tokens,
                                       do_sample=False, streamer=_QueueStreamer(loop, queue),
                                       pad_token_id=tokenizer.pad_token_id)

                await asyncio.to_thread(work)

        task = asyncio.create_task(run())

        async def tokens():
            while (token := await queue.get()) is not None:
                yield token
            await task

        if not body.get("stream"):
            out = [t async for t in tokens()]
            return JSONResponse({"choices": [{"index": 0, "text": tokenizer.decode(out), "finish_reason": "length"}],
                                 "usage": {"prompt_tokens": len(ids), "completion_tokens": len(out)}})

        async def events():
            n = 0
            async for token in tokens():
                n += 1
                chunk = {"choices": [{"index": 0, "text": tokenizer.decode([token]), "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n"
            usage = {"prompt_tokens": len(ids), "completion_tokens": n}
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


if __name__ == "__main__":
    _model_dir, _port = sys.argv[1], int(sys.argv[2])
    threading.current_thread().name = "naive-server"
    uvicorn.run(create_app(_model_dir), host="127.0.0.1", port=_port, log_level="warning")
