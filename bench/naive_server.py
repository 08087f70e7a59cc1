"""The baseline: how a BLIP captioning server is usually written without vlserve.
FastAPI + transformers, one `generate` per request, one request at a time.

    python bench/naive_server.py MODEL_DIR PORT
"""

import base64
import io
import sys
import threading

import torch
import uvicorn
from fastapi import FastAPI
from PIL import Image
from pydantic import BaseModel
from transformers import BlipForConditionalGeneration, BlipImageProcessorPil

folder, port = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(int(sys.argv[3]) if len(sys.argv) > 3 else 2)
model = BlipForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
processor = BlipImageProcessorPil(size={"height": 384, "width": 384})
lock = threading.Lock()
app = FastAPI()


class Req(BaseModel):
    images: list[str]
    max_new_tokens: int = 20
    min_new_tokens: int = 0


@app.post("/v1/caption")
def caption(req: Req):
    imgs = [Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB") for b in req.images]
    pixels = processor(images=imgs, return_tensors="pt")["pixel_values"]
    with lock, torch.inference_mode():
        out = model.generate(pixel_values=pixels, max_new_tokens=req.max_new_tokens,
                             min_new_tokens=req.min_new_tokens)
    return {"captions": [[{"tokens": row.tolist()}] for row in out]}


@app.get("/health/ready")
def ready():
    return {"status": "ready"}


uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")
