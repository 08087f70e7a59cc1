"""BlipEngine: a loaded BLIP checkpoint behind the family contract (engine/family.py).

Which optional capabilities it has follows the checkpoint's weights (model.py
Components): a captioning folder captions, a retrieval folder embeds and matches, a VQA
folder answers, a union folder does all of it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from ...engine.family import (AnswerGenerator, AnswerRanker, Captioner, EngineOptions, FamilyEngine, Matcher,
                              Source, check_int8, derive_capabilities, resolve_dtype)
from ...engine.images import ImageProcessor
from ...models.attention import make_backend
from .cross import MODES
from .decoder import BlipDecoderGraph
from .loader import load_blip
from .model import Blip
from .tokenizer import BlipTokenizer


class BlipOptions(BaseModel):
    """model.toml's [blip] table."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # decoder cross-attention: "cached" keys/values or "absorbed" into the query (cross.py);
    # auto: absorbed on the CPU (fewer FLOPs for short outputs), cached on CUDA (the Triton kernels' layout)
    cross_attention: Literal["auto", "cached", "absorbed"] = "auto"
    # ITM / question first token; None: by the checkpoint's origin ([CLS] for HF layouts, [ENC] for .pth)
    fusion_first_token: Literal["[CLS]", "[ENC]"] | None = None
    prompt: str | None = None  # default caption prompt; None: "a picture of " for .pth, else none


class BlipEngine(FamilyEngine):
    family = "blip"

    def __init__(self, folder: str | Path, options: EngineOptions = EngineOptions(),
                 blip: BlipOptions = BlipOptions()):
        self.folder = Path(folder)
        self.options, self.blip_options = options, blip
        self.device = torch.device(options.device)
        self.dtype = resolve_dtype(options.dtype)
        loaded = load_blip(self.folder, device=self.device, dtype=self.dtype)
        self.model: Blip = loaded.model
        self.origin = loaded.origin
        self.backend = make_backend(options.attention, self.device)
        cross = blip.cross_attention
        if cross == "auto":
            cross = "cached" if self.device.type == "cuda" else "absorbed"
        if cross not in MODES:
            raise ValueError(f"cross_attention must be 'auto' or one of {MODES}, got {cross!r}")
        self.cross_mode = cross
        self.model.set_attention_backend(self.backend)
        cfg = self.model.config
        self.tokenizer = BlipTokenizer.from_folder(self.folder, cfg.text, ids_from_vocab=self.origin == "original")
        self.processor = ImageProcessor.from_folder(self.folder, cfg.vision.image_size)
        first = blip.fusion_first_token or ("[ENC]" if self.origin == "original" else "[CLS]")
        self.fusion_first_token = first
        self.fusion_first_id = self.tokenizer.enc_id if first == "[ENC]" else self.tokenizer.cls_id
        prompt = blip.prompt
        self.default_prompt = prompt if prompt is not None else ("a picture of " if self.origin == "original" else "")
        decoder = self.model.text_decoder
        # one decoder serves both roles in a union checkpoint: caption and answer rows share its loop
        self.caption_decoder = self.answer_decoder = (
            BlipDecoderGraph(decoder, self.tokenizer.sep_id, cross) if decoder is not None else None)
        self.onnx = None
        if options.onnx_graphs:
            from .onnx.encoders import OnnxEncoders

            out = self.folder / (options.onnx_dir or "onnx")
            self.onnx = OnnxEncoders(self.model, self.folder, options.onnx_graphs, out, self.device, self.dtype,
                                     options.ort, int8=options.int8_graphs)
        check_int8(options, self.device)  # after the ONNX export, which needs the float modules
        onnx_run = self.onnx.sessions if self.onnx is not None else {}
        torch_int8 = self.model.quantize_int8(tuple(g for g in options.int8_graphs if g not in onnx_run))
        self.int8_graphs = torch_int8 + (self.onnx.int8 if self.onnx is not None else ())

    # -- what this checkpoint serves ------------------------------------------------------

    @property
    def graphs(self) -> tuple[str, ...]:
        return self.model.components.graphs

    def supports(self, capability: type) -> bool:
        c, graphs = self.model.components, self.graphs
        if capability is Captioner:
            return "decoder" in graphs and "caption" in c.decoder_roles
        if capability in (AnswerGenerator, AnswerRanker):
            return "fusion" in graphs and "decoder" in graphs and "answer" in c.decoder_roles
        if capability is Matcher:
            return "fusion" in graphs and c.itm_head
        return False

    @property
    def capabilities(self):
        cfg = self.model.config
        return derive_capabilities(
            self, embedding_dim=cfg.image_text_hidden_size if "text" in self.graphs else None,
            max_text_tokens=cfg.text.max_position_embeddings, image_size=self.processor.size, graphs=self.graphs)

    def _on_onnx(self, graph: str) -> bool:
        return self.onnx is not None and graph in self.onnx

    def runtime(self, graph: str) -> str:
        """As FamilyEngine's, with "onnx" for the graphs ONNX Runtime runs."""
        runtime = super().runtime(graph)
        return runtime.replace("torch", "onnx") if self._on_onnx(graph) else runtime

    def describe(self) -> dict:
        return {"attention": self.backend.name, "cross_attention": self.cross_mode,
                "fusion_first_token": self.fusion_first_token, "default_prompt": self.default_prompt}

    # -- inputs (CPU work; the server runs these in a thread pool) ---------------------

    def check_texts(self, texts: list[str], param: str = "texts") -> list[int]:
        return self.tokenizer.validate(list(texts), param)

    def decode_text(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    # -- graphs ---------------------------------------------------------------------------

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """`vision`: (B, 3, S, S) -> (B, 1 + N, Dv) on the engine's device."""
        pixels = pixels.to(self.device, self.dtype)
        if self._on_onnx("vision"):
            return self.onnx.vision(pixels).to(self.device)
        return self.model.encode_images(pixels)

    @torch.inference_mode()
    def image_embeddings(self, states: torch.Tensor) -> torch.Tensor:
        return self.model.image_embeddings(states).float()

    @torch.inference_mode()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """`text`: normalised ITC embeddings (B, E) float32."""
        ids, mask = self.tokenizer.encode_batch(texts)
        if self._on_onnx("text"):
            return self.onnx.text(ids, mask).to(self.device).float()
        return self.model.text_embeddings(ids.to(self.device), mask.to(self.device)).float()

    @torch.inference_mode()
    def match(self, states: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """`fusion` + ITM head: match probability (B,) for pairs (states[i], texts[i])."""
        ids, mask = self.tokenizer.encode_batch(texts, first_token=self.fusion_first_id)
        if self._on_onnx("fusion"):
            logits = self.onnx.fusion(states, ids, mask)[1].to(self.device)
        else:
            logits = self.model.itm_logits(states, ids.to(self.device), mask.to(self.device))
        return logits.float().softmax(dim=-1)[:, 1]

    # -- generation sources -------------------------------------------------------------

    def caption_prompt(self, prompt: str | None) -> list[int]:
        return self.tokenizer.encode_prompt(self.default_prompt if prompt is None else prompt)

    def caption_sources(self, states: torch.Tensor) -> list[Source]:
        return [Source(s, s.shape[0]) for s in states]  # every image token is real

    def answer_prompt(self) -> list[int]:
        return [self.tokenizer.dec_id]

    @torch.inference_mode()
    def question_sources(self, states: torch.Tensor, questions: list[str]) -> list[Source]:
        """`fusion`: each question's states (Lq, Dt) grounded in its image."""
        ids, mask = self.tokenizer.encode_batch(questions, first_token=self.fusion_first_id, param="questions")
        if self._on_onnx("fusion"):
            hidden = self.onnx.fusion(states, ids, mask)[0].to(self.device)
        else:
            hidden = self.model.fuse(states, ids.to(self.device), mask.to(self.device))
        lengths = mask.sum(dim=1).tolist()
        return [Source(h[:n], n) for h, n in zip(hidden, lengths)]

    def answer_tokens(self, answer: str) -> list[int]:
        return self.tokenizer.answer_ids(answer)[1:-1]

    @torch.inference_mode()
    def answer_loglik(self, items: list[tuple[Source, list[str]]]) -> list[torch.Tensor]:
        """`decoder`, teacher-forced: log p(answer + [SEP] | question) for each candidate; (C,) per item."""
        rows, sources, lengths = [], [], []
        for source, candidates in items:
            for i, c in enumerate(candidates):
                rows.append(self.tokenizer.answer_ids(c, param=f"candidates[{i}]"))
                sources.append(source.states[: source.length])
                lengths.append(source.length)
        ids, mask = self.tokenizer.pad(rows)
        ids, mask = ids.to(self.device), mask.to(self.device)
        states = torch.nn.utils.rnn.pad_sequence(sources, batch_first=True)  # (rows, Lq, Dt)
        src_pad = torch.arange(states.shape[1], device=self.device)[None, :] >= torch.tensor(
            lengths, device=self.device)[:, None]
        logits = self.model.text_decoder(ids, mask, states, src_pad).float()  # (rows, L, V)
        lp = F.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]  # (rows, L-1)
        scores = (lp * mask[:, 1:]).sum(dim=1)
        return list(torch.split(scores, [len(c) for _, c in items]))
