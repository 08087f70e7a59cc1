"""The playground: the page at `/`, its static files, and example scenes from the shapes
world (held-out seed, rendered on request) for the shipped toy models.

The page is public like a docs page (it holds no data); what it asks of the API goes
through the API key like any other client's request."""

from __future__ import annotations

import io
import random
from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter, HTTPException
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from ..shapes import generate, render, swap_colors
from ..shapes.negatives import false_caption

PAGE = files("vlserve.playground")
EXAMPLE_SEED = 2024  # the toy models' held-out evaluation seed (training never sees it)
EXAMPLES = 8
PREFIX = "/playground"

router = APIRouter(include_in_schema=False)


def is_page(path: str) -> bool:
    """The paths the page itself needs (public, like /docs)."""
    return path == "/" or path.startswith(PREFIX + "/")


def mount_static(app) -> None:
    app.mount(f"{PREFIX}/static", StaticFiles(directory=str(PAGE)), name="playground-static")


@router.get("/", response_class=HTMLResponse)
async def page():
    return HTMLResponse(PAGE.joinpath("index.html").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _scenes():
    return generate(EXAMPLES, EXAMPLE_SEED)


@router.get(f"{PREFIX}/examples")
async def examples():
    """Each scene's picture, its caption, its questions and near-miss captions to score."""
    out = []
    for i, (scene, qa) in enumerate(_scenes()):
        rng = random.Random(EXAMPLE_SEED + i)
        negatives = [swap_colors(scene)] if scene.relation else []
        negatives.append(false_caption(scene, rng))
        out.append({"index": i, "url": f"{PREFIX}/examples/{i}.png", "caption": scene.caption,
                    "questions": [{"question": q.question, "answer": q.answer} for q in qa],
                    "negatives": negatives})
    return out


@lru_cache(maxsize=EXAMPLES)
def _png(i: int) -> bytes:
    buf = io.BytesIO()
    render(_scenes()[i][0]).save(buf, format="PNG")
    return buf.getvalue()


@router.get(PREFIX + "/examples/{i}.png")
async def example_png(i: int):
    if not 0 <= i < EXAMPLES:
        raise HTTPException(404, f"example scenes are 0..{EXAMPLES - 1}")
    return Response(_png(i), media_type="image/png", headers={"Cache-Control": "max-age=3600"})
