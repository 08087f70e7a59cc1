"""The peer a user would pick: LitServe with transformers' BLIP `generate` and LitServe's own
dynamic batching (up to 8 requests, 50 ms), one image per request, as serve_load.py sends.

    python bench/litserve_server.py MODEL_DIR PORT [THREADS]
"""

import base64
import io
import sys

import litserve as ls
import torch
from PIL import Image
from transformers import BlipForConditionalGeneration, BlipImageProcessorPil

folder, port = sys.argv[1], int(sys.argv[2])
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2


class BlipCaptioner(ls.LitAPI):
    def setup(self, device):
        torch.set_num_threads(threads)
        self.model = BlipForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = BlipImageProcessorPil(size={"height": 384, "width": 384})

    def decode_request(self, request):
        image = Image.open(io.BytesIO(base64.b64decode(request["images"][0]))).convert("RGB")
        pixels = self.processor(images=[image], return_tensors="pt")["pixel_values"][0]
        return pixels, int(request.get("max_new_tokens", 20)), int(request.get("min_new_tokens", 0))

    def batch(self, inputs):
        # one batch decodes to the longest request's length, as LitServe users write it
        return (torch.stack([p for p, _, _ in inputs]), max(n for _, n, _ in inputs),
                max(m for _, _, m in inputs))

    def predict(self, batch):
        pixels, max_new, min_new = batch
        with torch.inference_mode():
            return self.model.generate(pixel_values=pixels, max_new_tokens=max_new, min_new_tokens=min_new)

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output):
        return {"captions": [[{"tokens": output.tolist()}]]}


if __name__ == "__main__":
    api = BlipCaptioner(max_batch_size=8, batch_timeout=0.05, api_path="/v1/caption")
    ls.LitServer(api, accelerator="cpu", workers_per_device=1, healthcheck_path="/health/ready",
                 timeout=3600).run(host="127.0.0.1", port=port, generate_client_file=False,
                                        log_level="warning")
