"""Train blip-toy: one small BLIP learning ITC, ITM, captioning and VQA jointly on the shapes world.

    nice -n 15 .venv/bin/python model_repo/blip-toy/train.py --workdir /tmp/blip-toy-run

Seeded and resumable: the state is saved to --workdir every --ckpt-every steps and a
rerun with the same --workdir continues from there (scenes are drawn per step from the
seed, so a resumed run sees the same data). At the end the weights go to --out in the
HuggingFace layout. Progress lines go to stdout and --workdir/progress.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data import CAPTION_LEN, make_batch  # noqa: E402
from evaluate import evaluate  # noqa: E402
from objectives import BlipObjectives, init_weights  # noqa: E402

from vlserve.families.blip.saver import save_blip  # noqa: E402
from vlserve.engine.images import CLIP_MEAN, CLIP_STD, ImageProcessor  # noqa: E402
from vlserve.families.blip.tokenizer import BlipTokenizer, wordpiece_tokenizer  # noqa: E402
from vlserve.families.blip.config import BlipConfig, TextConfig, VisionConfig  # noqa: E402
from vlserve.families.blip.model import Blip, Components  # noqa: E402
from vlserve.shapes import vocabulary  # noqa: E402
from vlserve.shapes.evaluation import validate  # noqa: E402
from vlserve.shapes.training import Ema, adamw, add_run_args, resume, start, train  # noqa: E402

ALL = Components(text_encoder=True, text_encoder_cross=True, projections=True, itm_head=True,
                 text_decoder=True, decoder_roles=("answer", "caption"))


def make_config(args, vocab_size: int, tok) -> BlipConfig:
    w = args.width
    vision = VisionConfig(hidden_size=w, intermediate_size=4 * w, num_hidden_layers=args.vision_layers,
                          num_attention_heads=w // 32, image_size=args.image_size, patch_size=args.patch_size)
    # the decoder answers by cross-attending question states: text width == vision width
    text = TextConfig(vocab_size=vocab_size, hidden_size=w, encoder_hidden_size=w, intermediate_size=4 * w,
                      num_hidden_layers=args.text_layers, num_attention_heads=w // 32,
                      max_position_embeddings=32, pad_token_id=0, bos_token_id=tok.token_to_id("[DEC]"),
                      sep_token_id=tok.token_to_id("[SEP]"))
    return BlipConfig(vision=vision, text=text, image_text_hidden_size=args.embed_dim)


def export(model: Blip, tok, folder: Path, dtype: torch.dtype = torch.float16) -> Path:
    """The servable files: config.json, model.safetensors (float16), tokenizer, preprocessing."""
    copy = Blip(model.config, model.components)
    copy.load_state_dict(model.state_dict())
    copy.text_decoder.tie_weights()
    save_blip(copy.to(dtype), folder)
    tok.save(str(folder / "tokenizer.json"))
    size = model.config.vision.image_size
    (folder / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "BlipImageProcessor", "do_resize": True, "do_rescale": True,
        "do_normalize": True, "do_convert_rgb": True, "resample": 3,
        "size": {"height": size, "width": size}, "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "rescale_factor": 1 / 255}, indent=2) + "\n")
    return folder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(p, workdir=Path("/tmp/blip-toy-run"), out=HERE, steps=10000)
    p.add_argument("--vision-layers", type=int, default=6)
    p.add_argument("--text-layers", type=int, default=4)
    p.add_argument("--embed-dim", type=int, default=128)
    args = p.parse_args(argv)

    tuner = start(args)
    tok = wordpiece_tokenizer(vocabulary())
    config = make_config(args, tok.get_vocab_size(), tok)
    model = Blip(config, ALL)
    init_weights(model)
    objectives = BlipObjectives(model)
    ema = Ema(model, args.ema)
    opt = adamw(objectives, args, embeddings="embedding")
    btok = BlipTokenizer(tok, config.text)
    processor = ImageProcessor(size=config.vision.image_size)
    gen = torch.Generator().manual_seed(args.seed)
    step, spent, state = resume(args, objectives, opt, ema)
    if state:
        model.text_decoder.tie_weights()
        ema.model.text_decoder.tie_weights()
        gen.set_state(state["gen"])
    n_params = sum(t.numel() for t in model.state_dict().values()) - config.text.vocab_size * config.text.hidden_size
    print(f"params {n_params / 1e6:.2f}M; {json.dumps(vars(args), default=str)}", flush=True)
    assert CAPTION_LEN <= config.text.max_position_embeddings

    def losses_at(step: int) -> dict:
        return objectives(make_batch(step, args.seed, args.batch, btok, processor, args.two_prob, args.negatives), gen)

    train(args, objectives, opt, ema, tuner, step, spent, losses_at,
          validate=lambda folder: validate(evaluate, folder, args.val_n, full=False),
          export=lambda m, folder: export(m, tok, folder),
          log_fields=lambda: {"temp": round(float(objectives.temp.detach()), 4)},
          state_extra=lambda: {"gen": gen.get_state()})


if __name__ == "__main__":
    main()
