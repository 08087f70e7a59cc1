"""The tasks behind /v2/.../infer (kserve_front.py): named tensors in, the task through the
gateway (limits, deadline, batching as every route), named arrays out."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from ..tasks.caption import caption as caption_task
from ..tasks.retrieval import embed as embed_task
from ..tasks.retrieval import score as score_task
from ..tasks.vqa import vqa as vqa_task
from .decoding import decode_images, read_images
from .inputs import UPLOAD, check_strings


def _texts(values: list, name: str, settings) -> list[str]:
    out = []
    for i, v in enumerate(values):
        try:
            text = v.decode("utf-8") if isinstance(v, bytes) else v
        except UnicodeDecodeError:
            raise InvalidInputError(f"{name}[{i}] is not UTF-8 text", param=name) from None
        if not isinstance(text, str):
            raise InvalidInputError(f"{name} is a BYTES tensor of texts", param=name)
        out.append(text)
    check_strings({name: out}, settings)  # the text limits every JSON body gets
    return out


async def _images(gw, values: list | None):
    """Raw bytes (binary tensors) as uploads, text (JSON) as base64 / data URI references."""
    if not values:
        return None
    uploads, refs = {}, []
    for i, v in enumerate(values):
        if isinstance(v, bytes):
            refs.append(f"{UPLOAD}{i}")
            uploads[refs[-1]] = v
        elif isinstance(v, str):
            refs.append(v)
        else:
            raise InvalidInputError("IMAGE is a BYTES tensor of images", param="IMAGE")
    return await read_images(gw, refs, uploads, "IMAGE")


def _strings(texts: list[str]) -> np.ndarray:
    return np.array([t.encode() for t in texts], dtype=object)


async def run_task(request, gw, name: str, task: str, values: dict, params: dict, data: dict) -> dict:
    from .routes import _generation

    settings = gw.settings
    texts = _texts(values["TEXT"], "TEXT", settings) if "TEXT" in values else None
    questions = _texts(values["QUESTION"], "QUESTION", settings) if "QUESTION" in values else None
    images = await _images(gw, values.get("IMAGE"))
    if task in ("caption", "vqa", "score") and images is None:
        raise InvalidInputError(f"{task} needs an IMAGE input", param="IMAGE")
    timeout = (data.get("parameters") or {}).get("timeout")
    timeout_s = timeout / 1e6 if isinstance(timeout, (int, float)) and timeout > 0 else None  # Triton: microseconds

    async def work(served, models):
        model = served["model"]
        pixels = await decode_images(gw, model, images) if images is not None else None
        if task == "caption":
            caps = await caption_task(models["model"], pixels, params=_generation(gw, model.caption_defaults, params))
            return {"CAPTION": _strings([c[0].text for c in caps]),
                    "LOGPROB": np.array([c[0].logprob for c in caps], dtype=np.float32)}
        if task == "vqa":
            if questions is None:
                raise InvalidInputError("vqa needs a QUESTION input", param="QUESTION")
            answers = await vqa_task(models["model"], pixels, questions,
                                     params=_generation(gw, model.vqa_defaults, params))
            return {"ANSWER": _strings([a.text for a in answers])}
        if task == "score" and texts is None:
            raise InvalidInputError("score needs a TEXT input", param="TEXT")
        if task == "score":
            out = await score_task(models["model"], pixels, texts, model.capabilities.score_heads)
            return {head.upper(): m.numpy().astype(np.float32) for head, m in out.items()}
        img, txt = await embed_task(models["model"], pixels, texts)
        return {k: v.numpy().astype(np.float32) for k, v in (("IMAGE_EMBEDDING", img), ("TEXT_EMBEDDING", txt))
                if v is not None}

    return await gw.run(request, "infer", timeout_s, work, model=(name, task))
