"""The decode batch's storage is preallocated per bucket (issue 11): continuous admission
inside a bucket allocates nothing, outgrowing one allocates once, and results do not depend
on which bucket a group ran in."""

import torch

from vlserve.engine.generation.batch import LENGTH_BLOCK, length_bucket, row_bucket
from vlserve.engine.generation.groups import make_group
from vlserve.engine.generation.loop import DecodeLoop, generate
from vlserve.engine.generation.params import GenerationParams

PARAMS = GenerationParams(max_new_tokens=6, min_new_tokens=6)


def groups(engine, n, seed=0, params=PARAMS):
    px = torch.randn((n, 3, 32, 32), generator=torch.Generator().manual_seed(seed))
    states = engine.encode_images(px)
    return [make_group([engine.tokenizer.dec_id], params, s, s.shape[0]) for s in states]


def test_buckets():
    assert [row_bucket(n) for n in (1, 2, 3, 4, 5, 9, 64)] == [1, 2, 4, 4, 8, 16, 64]
    assert [length_bucket(n) for n in (1, LENGTH_BLOCK, LENGTH_BLOCK + 1)] == [LENGTH_BLOCK, LENGTH_BLOCK,
                                                                             2 * LENGTH_BLOCK]


def test_admissions_inside_a_bucket_allocate_nothing(engine):
    loop = DecodeLoop(engine.caption_decoder, max_rows=8)
    with torch.inference_mode():
        for g in groups(engine, 4, seed=1):
            loop.add(g)
        loop.step()  # prefill: rows and sources get their buckets (4 rows, 4 sources)
        first = loop.batch.allocations
        assert first == 2 and loop.batch.row_cap == 4 and loop.batch.src_cap == 4
        steps = 0
        while loop.busy:
            if steps == 2:  # a newcomer while the first four still run: the buckets still fit
                for g in groups(engine, 1, seed=2, params=GenerationParams(max_new_tokens=3)):
                    loop.add(g)
            loop.step()
            steps += 1
        assert loop.batch.allocations == first + 2  # 5 rows outgrew the 4-row buckets once (rows, sources)
        assert loop.batch.row_cap == 8 and loop.batch.src_cap == 8
        for g in groups(engine, 8, seed=3):  # 8 more fit the grown buckets: nothing allocated
            loop.add(g)
        while loop.busy:
            loop.step()
        assert loop.batch.allocations == first + 2


def test_results_do_not_depend_on_the_bucket(engine):
    alone = [generate(engine.caption_decoder, [g])[0] for g in groups(engine, 3, seed=4)]
    together = generate(engine.caption_decoder, groups(engine, 3, seed=4))
    assert [[h.tokens for h in r] for r in together] == [[h.tokens for h in r] for r in alone]
