"""vlserve's BEiT-3 against torchscale 0.3's BEiT3 and unilm's task classes (beit3-gml 0.1.3)
themselves (CPU, fp32), on random models of several shapes: the backbone's three modes,
retrieval embeddings, VQA logits, captioning logits through the cache, greedy and beam
decoding, the tokenizer and the eval preprocessing; and the shipped beit3-toy as unilm's
classes load it."""

import asyncio
import dataclasses
from pathlib import Path

import pytest
import torch

pytest.importorskip("torchscale", reason="runs in .venv-ref (make test)")
pytest.importorskip("beit3", reason="runs in .venv-ref (make test)")

from torchvision import transforms  # noqa: E402
from transformers import XLMRobertaTokenizer  # noqa: E402

from tests.helpers.tasks import task_model  # noqa: E402
from tests.helpers.tiny_beit3 import train_spm  # noqa: E402
from tests.parity.beit3_reference import (ANSWERS, CONFIGS, EOS_BIAS, KINDS, backbone, build,  # noqa: E402
                                          decode_recomputing, greedy, save)
from tests.parity.photos import photo_like  # noqa: E402
from vlserve.engine.generation.batch import DecodeBatch  # noqa: E402
from vlserve.engine.generation.params import GenerationParams  # noqa: E402
from vlserve.families.beit3.engine import Beit3Engine, Beit3Options  # noqa: E402
from vlserve.families.beit3.model import Beit3Model  # noqa: E402
from vlserve.families.beit3.tokenizer import BOS, Beit3Tokenizer  # noqa: E402
from vlserve.tasks.caption import caption  # noqa: E402

ATOL = 1e-4
TEXTS = ["a small red square", "two circles", "is the blue triangle left of the green circle?", "red",
         "what colour is the large shape"]
TOY = Path(__file__).resolve().parents[2] / "model_repo" / "beit3-toy"


@pytest.fixture(scope="module")
def spm(tmp_path_factory) -> Path:
    return train_spm(tmp_path_factory.mktemp("spm") / "beit3.spm")


@pytest.fixture(scope="module")
def hf_tokenizer(spm):
    return XLMRobertaTokenizer(str(spm))


def vocab_of(spm) -> int:
    return Beit3Tokenizer(spm, 64).vocab_size + 3  # padded beyond <mask>, as unilm's 64010 is


@pytest.fixture(scope="module", params=list(CONFIGS))
def trio(request, spm, tmp_path_factory):
    """{kind: (unilm model, vlserve engine)} for one shape, one checkpoint per task as unilm ships them."""
    cfg, out = CONFIGS[request.param], {}
    for i, kind in enumerate(KINDS):
        ref = build(kind, cfg, vocab_of(spm), seed=10 * i + len(request.param), eos_bias=EOS_BIAS[request.param])
        folder = save(ref, tmp_path_factory.mktemp(kind), spm, cfg.heads, key="module" if kind == "vqa" else "model")
        out[kind] = ref, Beit3Engine(folder, beit3=Beit3Options(heads=cfg.heads, layernorm_eps=cfg.eps))
    return cfg, out


def pixels(cfg, n, seed=0):
    return torch.randn((n, 3, cfg.image_size, cfg.image_size), generator=torch.Generator().manual_seed(seed))


def unilm_text(hf, texts, max_len=64):
    """unilm's _get_text_segment: [bos] + tokens + [eos], padded to max_len, and its padding mask."""
    rows = [[hf.bos_token_id] + hf.convert_tokens_to_ids(hf.tokenize(t)) + [hf.eos_token_id] for t in texts]
    ids = torch.tensor([r + [hf.pad_token_id] * (max_len - len(r)) for r in rows])
    return ids, (ids == hf.pad_token_id).long()


@pytest.mark.parametrize("normalize_output", [True, False])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_backbone_states_in_every_mode(name, normalize_output, spm):
    cfg = CONFIGS[name]
    vocab = vocab_of(spm)
    ref = backbone(cfg, vocab, seed=3, normalize_output=normalize_output)
    ours = Beit3Model(dataclasses.replace(cfg, vocab_size=vocab, normalize_output=normalize_output)).eval()
    ours.load_state_dict({"beit3." + k: v for k, v in ref.state_dict().items()}, strict=True)
    g = torch.Generator().manual_seed(4)
    px = torch.randn((3, 3, cfg.image_size, cfg.image_size), generator=g)
    ids = torch.randint(4, vocab, (3, 9), generator=g)
    pad = torch.zeros(3, 9, dtype=torch.bool)
    pad[1, 5:], pad[2, 1:] = True, True  # odd lengths: 9, 5 and 1 token
    with torch.no_grad():
        checks = [
            (ref(textual_tokens=None, visual_tokens=px), ours.vision(ours.embed_image(px))),
            (ref(textual_tokens=ids, visual_tokens=None, text_padding_position=pad), ours.text(ids, pad)),
            (ref(textual_tokens=ids, visual_tokens=px, text_padding_position=pad),
             ours.fusion(ours.embed_image(px), ids, pad)),
        ]
        ours.pack()  # the serving layout: fused q/k/v, same numbers
        checks.append((checks[-1][0], ours.fusion(ours.embed_image(px), ids, pad)))
    for want, got in checks:
        torch.testing.assert_close(got, want["encoder_out"], atol=ATOL, rtol=0)
    assert checks[0][1].std() > 1e-2  # not a comparison between constants


def test_retrieval_embeddings(trio, hf_tokenizer):
    cfg, models = trio
    ref, eng = models["retrieval"]
    px = pixels(cfg, 3, seed=1)
    ids, pad = unilm_text(hf_tokenizer, TEXTS, max_len=eng.tokenizer.max_tokens)
    with torch.no_grad():
        want_img, _ = ref(image=px, only_infer=True)
        _, want_txt = ref(text_description=ids, padding_mask=pad, only_infer=True)
    torch.testing.assert_close(eng.image_embeddings(eng.encode_images(px)), want_img, atol=ATOL, rtol=0)
    torch.testing.assert_close(eng.text_embeddings(TEXTS), want_txt, atol=ATOL, rtol=0)
    assert eng.capabilities.tasks == ("embed", "score", "rank")


def test_vqa_logits(trio, hf_tokenizer):
    cfg, models = trio
    ref, eng = models["vqa"]
    px = pixels(cfg, len(TEXTS), seed=2)
    ids, pad = unilm_text(hf_tokenizer, TEXTS, max_len=eng.tokenizer.max_tokens)
    with torch.no_grad():
        want = ref(image=px, question=ids, padding_mask=pad)
    got = eng.classify(eng.encode_images(px), TEXTS)
    torch.testing.assert_close(got, torch.sigmoid(want), atol=ATOL, rtol=0)
    torch.testing.assert_close(eng.model.answer_logits(eng.model.fusion(
        eng.encode_images(px), *eng._text(TEXTS))), want, atol=ATOL, rtol=0)
    assert eng.answers == ANSWERS and eng.capabilities.vqa_modes == ("classify",)
    assert eng.capabilities.tasks == ("vqa",) and not eng.model.config.normalize_output


def ref_next_logits(ref, image, ids, mask_id):
    cur = torch.tensor([ids + [mask_id]])
    with torch.no_grad():
        logits, _ = ref(image=image[None], text_ids=cur, padding_mask=torch.zeros_like(cur), language_masked_pos=None)
    return logits[0, -1]


@pytest.mark.parametrize("beams", [1, 2])
def test_caption_logits_through_the_cache(trio, beams):
    """Prompts of different lengths in one prefill, then forced tokens step by step; with
    beams = 2 two rows read each image's prefix (decode_prefixed's grouped path) and differ."""
    cfg, models = trio
    ref, eng = models["caption"]
    graph, tok = eng.caption_decoder, eng.tokenizer
    px = pixels(cfg, 3, seed=3)
    states = eng.encode_images(px)
    prompts = [[BOS], [BOS, 7, 9], [BOS, 12]]
    batch = DecodeBatch(graph)
    first = batch.prefill(states, [states.shape[1]] * 3, prompts, max_len=12)
    for i, p in enumerate(prompts):
        torch.testing.assert_close(first[i], ref_next_logits(ref, px[i], p, tok.mask_id), atol=ATOL, rtol=0)
    histories = [list(p) for p in prompts for _ in range(beams)]
    g = torch.Generator().manual_seed(5)
    for step in range(5):
        forced = torch.randint(4, tok.mask_id, (3 * beams,), generator=g)
        parents = [i // beams for i in range(3 * beams)] if step == 0 else list(range(3 * beams))
        batch.select(parents, forced, torch.zeros(3 * beams), list(range(3)), [beams] * 3)
        for h, t in zip(histories, forced.tolist()):
            h.append(t)
        logits = batch.step()
        for r, h in enumerate(histories):
            torch.testing.assert_close(logits[r], ref_next_logits(ref, px[r // beams], h, tok.mask_id),
                                       atol=ATOL, rtol=0)


def run_caption(eng, px, **params):
    out = asyncio.run(caption(task_model(eng), px, params=GenerationParams(**params)))
    return [[c.tokens for c in cs] for cs in out]


@pytest.mark.parametrize("incremental", [True, False])
def test_greedy_equals_a_greedy_loop_over_unilms_forward(trio, incremental):
    cfg, models = trio
    ref, eng = models["caption"]
    px = pixels(cfg, 4, seed=6)
    steps = 12
    want = greedy(ref, px, steps, eng.tokenizer.mask_id, incremental=incremental)
    got = run_caption(eng, px, max_new_tokens=steps)
    assert [c[0] for c in got] == want
    assert any(len(w) < steps for w in want)  # some ended at </s>


@pytest.mark.parametrize("options", [dict(num_beams=3), dict(num_beams=4, length_penalty=0.6),
                                     dict(num_beams=3, repetition_penalty=1.3, min_new_tokens=3)])
def test_beams_through_the_cache_equal_beams_over_unilms_forward(trio, options):
    cfg, models = trio
    ref, eng = models["caption"]
    px = pixels(cfg, 3, seed=7)
    params = GenerationParams(max_new_tokens=10, **options)
    want = decode_recomputing(ref, px, params, [BOS], eng.tokenizer.mask_id, eng.caption_decoder.max_positions)
    got = run_caption(eng, px, max_new_tokens=10, **options)
    assert [c[0] for c in got] == want


def test_caption_checkpoint_serves_captions_only(trio):
    _, models = trio
    eng = models["caption"][1]
    assert eng.capabilities.tasks == ("caption",)


def test_tokenizer_ids_equal_xlm_robertas(spm, hf_tokenizer):
    ours = Beit3Tokenizer(spm, 400)
    texts = TEXTS + ["A Small RED square, left of a large blue circle.", "tabs\tand\nnewlines  and   spaces",
                     "emoji 🙂 and 中文 and naïve café", "zzz qqq xylophone", "3.14159 and 1,000,000", " lead",
                     "x" * 90]
    for text in texts:
        want = [hf_tokenizer.bos_token_id] + hf_tokenizer.convert_tokens_to_ids(hf_tokenizer.tokenize(text)) + [
            hf_tokenizer.eos_token_id]
        assert ours.ids(text) == want, text
        assert ours.decode(want) == hf_tokenizer.decode(want, skip_special_tokens=True), text
    assert (ours.mask_id, ours.vocab_size) == (hf_tokenizer.mask_token_id, hf_tokenizer.vocab_size)
    assert (BOS, ours.pad_id, ours.eos_id) == (hf_tokenizer.bos_token_id, hf_tokenizer.pad_token_id,
                                              hf_tokenizer.eos_token_id)
    assert 3 in ours.ids("中文")  # pieces the model lacks become <unk>, as fairseq maps them


@pytest.mark.parametrize("size", [(1920, 1080), (333, 777), (40, 40), (41, 500)])
def test_preprocessing_equals_unilms_eval_transform(size, trio):
    cfg, models = trio
    eng = models["retrieval"][1]
    img = photo_like(size)
    s = cfg.image_size
    want = transforms.Compose([transforms.Resize((s, s), interpolation=3), transforms.ToTensor(),
                               transforms.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))])(img)
    torch.testing.assert_close(eng.pixels([img])[0], want, atol=1e-6, rtol=0)


@pytest.mark.skipif(not (TOY / "beit3.pth").is_file(), reason="beit3-toy not trained yet")
def test_beit3_toy_loads_in_unilms_classes_with_our_outputs():
    from tests.parity.beit3_toy_check import check_toy

    check_toy(TOY, ATOL)
