"""BlipEngine: a loaded BLIP checkpoint and its graph operations, each on a batch.

The engine knows nothing of requests or scheduling: the tasks layer composes these
operations, and the scheduler batches calls to them across requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import InvalidInputError, UnsupportedTaskError
from ..models.attention import make_backend
from ..models.blip.cross import MODES
from ..models.blip.model import TASK_GRAPHS, Blip
from .blip_loader import load_blip
from .generation.groups import Hypothesis, make_group
from .generation.loop import generate
from .generation.params import GenerationParams
from .images import DEFAULT_MAX_PIXELS, ImageProcessor, decode_image
from .onnx.runtime import OrtOptions
from .tokenizer import BlipTokenizer

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def resolve_dtype(dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}") from None


@dataclass(frozen=True)
class EngineOptions:
    device: str = "cpu"
    dtype: str = "float32"
    attention: str = "auto"
    # None: follow the checkpoint's origin ([CLS] for HF layouts, [ENC] for original .pth)
    fusion_first_token: str | None = None
    default_prompt: str | None = None  # None: "a picture of " for original .pth, else no prompt
    max_pixels: int = DEFAULT_MAX_PIXELS
    # decoder cross-attention: "cached" keys/values or "absorbed" into the query (models/blip/cross.py);
    # auto: absorbed on the CPU (fewer FLOPs for short outputs), cached on CUDA (the Triton kernels' layout)
    cross_attention: str = "auto"
    # encoder graphs (vision, text, fusion) run by ONNX Runtime instead of torch; ones the
    # checkpoint lacks are ignored. The decoder stays on torch (KV cache, continuous batching).
    onnx_graphs: tuple[str, ...] = ()
    onnx_dir: str | None = None  # None: <model folder>/onnx; relative paths are under the model folder
    ort: OrtOptions = OrtOptions()


class BlipEngine:
    family = "blip"

    def __init__(self, folder: str | Path, options: EngineOptions = EngineOptions()):
        self.folder = Path(folder)
        self.options = options
        self.device = torch.device(options.device)
        self.dtype = resolve_dtype(options.dtype)
        loaded = load_blip(self.folder, device=self.device, dtype=self.dtype)
        self.model: Blip = loaded.model
        self.origin = loaded.origin
        self.backend = make_backend(options.attention, self.device)
        cross = options.cross_attention
        if cross == "auto":
            cross = "cached" if self.device.type == "cuda" else "absorbed"
        if cross not in MODES:
            raise ValueError(f"cross_attention must be 'auto' or one of {MODES}, got {cross!r}")
        self.cross_mode = cross
        self.model.set_attention_backend(self.backend)
        cfg = self.model.config
        self.tokenizer = BlipTokenizer.from_folder(self.folder, cfg.text, ids_from_vocab=self.origin == "original")
        self.processor = ImageProcessor.from_folder(self.folder, cfg.vision.image_size)
        first = options.fusion_first_token or ("[ENC]" if self.origin == "original" else "[CLS]")
        if first not in ("[CLS]", "[ENC]"):
            raise ValueError(f"fusion_first_token must be '[CLS]' or '[ENC]', got {first!r}")
        self.fusion_first_token = first
        self.fusion_first_id = self.tokenizer.enc_id if first == "[ENC]" else self.tokenizer.cls_id
        prompt = options.default_prompt
        self.default_prompt = prompt if prompt is not None else ("a picture of " if self.origin == "original" else "")
        self.onnx = None
        if options.onnx_graphs:
            from .onnx.encoders import OnnxEncoders

            out = self.folder / (options.onnx_dir or "onnx")
            self.onnx = OnnxEncoders(self.model, self.folder, options.onnx_graphs, out, self.device, self.dtype,
                                     options.ort)

    def runtime(self, graph: str) -> str:
        """Which runtime runs a graph: "onnx" or "torch"."""
        return "onnx" if self.onnx is not None and graph in self.onnx else "torch"

    # -- what this checkpoint serves ------------------------------------------------------

    @property
    def graphs(self) -> tuple[str, ...]:
        return self.model.components.graphs

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.model.components.tasks

    def require(self, task: str) -> None:
        if task not in self.tasks:
            need = ", ".join(TASK_GRAPHS.get(task, (task,)))
            raise UnsupportedTaskError(
                f"this checkpoint cannot serve '{task}' (needs graphs: {need}); it serves: {', '.join(self.tasks)}",
                param="model")

    # -- inputs (CPU work; the server runs these in a thread pool) ---------------------

    def load_image(self, image, param: str = "images") -> Image.Image:
        if isinstance(image, Image.Image):
            return image
        if isinstance(image, (str, Path)):
            image = Path(image).read_bytes()
        if isinstance(image, (bytes, bytearray, memoryview)):
            return decode_image(bytes(image), max_pixels=self.options.max_pixels, param=param)
        raise InvalidInputError(f"unsupported image type {type(image).__name__}", param=param)

    def pixels(self, images: list, params: list[str] | None = None) -> torch.Tensor:
        """Images -> model input (B, 3, S, S); `params` name each image in errors."""
        if not images:
            raise InvalidInputError("at least one image is required", param="images")
        params = params or [f"images[{i}]" for i in range(len(images))]
        return self.processor([self.load_image(im, p) for im, p in zip(images, params)])

    @staticmethod
    def stack_pixels(parts: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(parts)

    # -- graphs ---------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """`vision`: (B, 3, S, S) -> (B, 1 + N, Dv) on the engine's device."""
        pixels = pixels.to(self.device, self.dtype)
        if self.runtime("vision") == "onnx":
            return self.onnx.vision(pixels).to(self.device)
        return self.model.encode_images(pixels)

    @torch.inference_mode()
    def image_embeddings(self, states: torch.Tensor) -> torch.Tensor:
        return self.model.image_embeddings(states).float()

    @torch.inference_mode()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """`text`: normalised ITC embeddings (B, E) float32."""
        ids, mask = self.tokenizer.encode_batch(texts)
        if self.runtime("text") == "onnx":
            return self.onnx.text(ids, mask).to(self.device).float()
        return self.model.text_embeddings(ids.to(self.device), mask.to(self.device)).float()

    @torch.inference_mode()
    def itm(self, states: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """`fusion` + ITM head: match probability (B,) for pairs (states[i], texts[i])."""
        ids, mask = self.tokenizer.encode_batch(texts, first_token=self.fusion_first_id)
        if self.runtime("fusion") == "onnx":
            logits = self.onnx.fusion(states, ids, mask)[1].to(self.device)
        else:
            logits = self.model.itm_logits(states, ids.to(self.device), mask.to(self.device))
        return logits.float().softmax(dim=-1)[:, 1]

    @torch.inference_mode()
    def encode_questions(self, states: torch.Tensor, questions: list[str]):
        """`fusion`: question states (B, Lq, Dt) grounded in the images, and their lengths."""
        ids, mask = self.tokenizer.encode_batch(questions, first_token=self.fusion_first_id, param="questions")
        if self.runtime("fusion") == "onnx":
            hidden = self.onnx.fusion(states, ids, mask)[0].to(self.device)
        else:
            hidden = self.model.fuse(states, ids.to(self.device), mask.to(self.device))
        return hidden, mask.sum(dim=1).tolist()

    def check_length(self, prompt_len: int, params: GenerationParams, param: str = "max_new_tokens") -> None:
        limit = self.model.config.text.max_position_embeddings
        if prompt_len + params.max_new_tokens > limit:
            raise InvalidInputError(
                f"prompt ({prompt_len} tokens) + max_new_tokens ({params.max_new_tokens}) exceeds the "
                f"decoder's {limit} positions", param=param)

    def make_groups(self, sources: list[torch.Tensor], lengths: list[int], prompts: list[list[int]],
                    params: list[GenerationParams]):
        for p, prm in zip(prompts, params):
            self.check_length(len(p), prm)
        return [make_group(p, prm, s, n) for s, n, p, prm in zip(sources, lengths, prompts, params)]

    @torch.inference_mode()
    def generate(self, groups) -> list[list[Hypothesis]]:
        """`decoder`: run sequence groups to completion as one static batch."""
        return generate(self.model.text_decoder, groups, self.tokenizer.sep_id, self.cross_mode)

    def answer_loglik(self, q_states: torch.Tensor, q_length: int, candidates: list[str]) -> torch.Tensor:
        return self.answer_loglik_batch([(q_states, q_length, candidates)])[0]

    @torch.inference_mode()
    def answer_loglik_batch(self, items: list) -> list[torch.Tensor]:
        """`decoder`, teacher-forced: log p(answer + [SEP] | question) for each candidate.

        items: (question states (Lq, Dt), question length, candidates); returns (C,) per item.
        """
        rows, sources, lengths = [], [], []
        for q_states, q_length, candidates in items:
            for i, c in enumerate(candidates):
                rows.append(self.tokenizer.answer_ids(c, param=f"candidates[{i}]"))
                sources.append(q_states[:q_length])
                lengths.append(q_length)
        ids, mask = self.tokenizer.pad(rows)
        ids, mask = ids.to(self.device), mask.to(self.device)
        states = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True)  # (rows, Lq, Dt)
        src_pad = torch.arange(states.shape[1], device=self.device)[None, :] >= torch.tensor(
            lengths, device=self.device)[:, None]
        logits = self.model.text_decoder(ids, mask, states, src_pad).float()  # (rows, L, V)
        lp = F.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]  # (rows, L-1)
        scores = (lp * mask[:, 1:]).sum(dim=1)
        return list(torch.split(scores, [len(c) for _, _, c in items]))

    def decode_text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)
