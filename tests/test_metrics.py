from __future__ import annotations

import pytest
import torch

from benchmark.metrics import clip_to_text_ranks, rank_metrics, text_to_clip_ranks


def test_text_to_clip_ranks_with_ties():
    sim = torch.tensor([[0.9, 0.1, 0.2],   # caption 0 -> clip 0: rank 0
                        [0.5, 0.5, 0.5],   # caption 1 -> clip 1: three-way tie -> average rank 1
                        [0.3, 0.8, 0.8]])  # caption 2 -> clip 2: tie with clip 1 for first -> 0.5
    gt = torch.tensor([0, 1, 2])
    assert text_to_clip_ranks(sim, gt).tolist() == [0.0, 1.0, 0.5]
    assert text_to_clip_ranks(sim, gt, "optimistic").tolist() == [0.0, 0.0, 0.0]
    assert text_to_clip_ranks(sim, gt, "pessimistic").tolist() == [0.0, 2.0, 1.0]


def test_clip_to_text_takes_the_best_of_shuffled_captions():
    # 5 captions of 2 clips in shuffled order: captions 0, 3 -> clip 1; captions 1, 2, 4 -> clip 0
    caption_clip = torch.tensor([1, 0, 0, 1, 0])
    sim = torch.tensor([[0.1, 0.2, 0.9, 0.3, 0.0],   # clip 0: its best caption (2) ranks first
                        [0.4, 0.6, 0.7, 0.5, 0.8]])  # clip 1: best own caption 0.5 has 3 above it
    assert clip_to_text_ranks(sim, caption_clip).tolist() == [0.0, 3.0]


def test_rank_metrics_golden():
    metrics = rank_metrics(torch.tensor([0.0, 0.0, 4.0, 9.0, 20.0]), "t2v")
    assert metrics == pytest.approx({"t2v/R1": 40.0, "t2v/R5": 60.0, "t2v/R10": 80.0, "t2v/MdR": 5.0,
                                     "t2v/MnR": 7.6})


def test_missing_items_count_as_misses():
    sim = torch.tensor([[0.9, 0.1, 0.2], [0.1, 0.8, 0.3], [0.2, 0.9, 0.7]])
    gt = torch.tensor([0, 1, 2])
    valid = torch.tensor([True, False, True])  # clip 1 has no audio
    ranks = text_to_clip_ranks(sim, gt, clip_valid=valid)
    assert ranks.tolist() == [0.0, 3.0, 0.0]  # caption 1 misses; clip 1 no longer outranks clip 2 for caption 2
    assert clip_to_text_ranks(sim.t(), gt, clip_valid=valid).tolist() == [0.0, 3.0, 0.0]


def _plain_ranks(sim, caption_clip):
    """An independent implementation: sort each row and average the positions of tied scores."""
    out = []
    for q, row in enumerate(sim.tolist()):
        target = row[caption_clip[q]]
        positions = [i for i, v in enumerate(sorted(row, reverse=True)) if v == target]
        out.append(sum(positions) / len(positions))
    return out


def test_metrics_equal_a_plain_implementation_on_random_matrices():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        sim = torch.randint(0, 6, (40, 9), generator=g).float()  # many ties
        caption_clip = torch.randint(0, 9, (40,), generator=g)
        assert text_to_clip_ranks(sim, caption_clip).tolist() == _plain_ranks(sim, caption_clip)
        ranks = text_to_clip_ranks(sim, caption_clip)
        plain = _plain_ranks(sim, caption_clip)
        expected_median = sorted(plain)[19] / 2 + sorted(plain)[20] / 2 + 1
        assert rank_metrics(ranks, "t2v")["t2v/MdR"] == pytest.approx(expected_median)
        assert rank_metrics(ranks, "t2v")["t2v/R5"] == pytest.approx(100 * sum(r < 5 for r in plain) / 40)


def test_dual_softmax_changes_scores_only_when_asked():
    from benchmark.metrics import postprocess

    # caption 1 prefers clip 0 (0.85 > 0.8), but caption 0 claims clip 0 more strongly: the dual softmax,
    # a prior over the queries, gives clip 1 back to caption 1
    sim, gt = torch.tensor([[0.9, 0.2], [0.85, 0.8]]), torch.tensor([0, 1])
    assert torch.equal(postprocess(sim, "none", 0.05), sim)
    assert text_to_clip_ranks(sim, gt).tolist() == [0.0, 1.0]
    assert text_to_clip_ranks(postprocess(sim, "dual_softmax", 0.05), gt).tolist() == [0.0, 0.0]


def test_bootstrap_interval_covers_the_true_value_at_its_nominal_rate():
    from benchmark.metrics import bootstrap_ci

    g = torch.Generator().manual_seed(1)
    true_r1 = 30.0
    covered = 0
    trials = 200
    for t in range(trials):
        ranks = torch.where(torch.rand(300, generator=g) < true_r1 / 100, 0.0, 5.0).double()
        low, high = bootstrap_ci(ranks, "t2v", resamples=400, seed=t)["t2v/R1"]
        covered += low <= true_r1 <= high
    assert 0.90 <= covered / trials <= 0.99, covered / trials


def test_paired_bootstrap_of_identical_runs_is_zero_and_of_a_better_run_is_positive():
    from benchmark.metrics import bootstrap_ci

    g = torch.Generator().manual_seed(2)
    base = torch.randint(0, 20, (500,), generator=g).double()
    assert bootstrap_ci(base, "t2v", 200, baseline=base)["t2v/R1"] == (0.0, 0.0)
    better = torch.where(torch.rand(500, generator=g) < 0.3, torch.zeros(500, dtype=torch.float64), base)
    low, high = bootstrap_ci(better, "t2v", 500, baseline=base)["t2v/R1"]
    assert 0 < low < high


def test_a_tied_first_place_is_not_an_r1_hit():
    """The authors' R@1 counts rank exactly 0 (spec §10.1): a first place shared with another clip (average
    rank 0.5) is a miss for R@1 and a hit for R@5, under every tie rule alike."""
    sim = torch.tensor([[0.8, 0.8, 0.1],   # caption 0: its clip ties with clip 1 for first -> rank 0.5
                        [0.1, 0.9, 0.2],   # caption 1: alone in first place -> rank 0
                        [0.3, 0.2, 0.7]])  # caption 2: rank 0
    gt = torch.tensor([0, 1, 2])
    metrics = rank_metrics(text_to_clip_ranks(sim, gt), "t2v")
    assert metrics["t2v/R1"] == pytest.approx(200 / 3) and metrics["t2v/R5"] == 100.0
    assert rank_metrics(text_to_clip_ranks(sim, gt, "optimistic"), "t2v")["t2v/R1"] == 100.0
    assert rank_metrics(text_to_clip_ranks(sim, gt, "pessimistic"), "t2v")["t2v/R1"] == pytest.approx(200 / 3)


def test_the_bootstrap_resamples_clips_with_all_their_captions():
    """A clip's captions are not independent draws (issue 15): 10 captions that all rank like their clip give the
    interval of the clips alone, which resampling the captions as if independent makes about 3x too narrow."""
    from benchmark.metrics import bootstrap_ci

    g = torch.Generator().manual_seed(3)
    per_clip = torch.where(torch.rand(300, generator=g) < 0.3, 0.0, 7.0).double()
    captions, clip_of = per_clip.repeat_interleave(10), torch.arange(300).repeat_interleave(10)
    clustered = bootstrap_ci(captions, "t2v", 300, seed=1, clips=clip_of)
    alone = bootstrap_ci(per_clip, "t2v", 300, seed=1)
    assert clustered.keys() == alone.keys()
    assert all(torch.allclose(torch.tensor(clustered[k]), torch.tensor(alone[k])) for k in alone)
    low, high = clustered["t2v/R1"]
    naive_low, naive_high = bootstrap_ci(captions, "t2v", 300, seed=1)["t2v/R1"]
    assert (high - low) > 2.5 * (naive_high - naive_low)


def test_the_weighted_bootstrap_equals_resampled_queries_laid_end_to_end():
    """Weights by draw count give the metrics of the resampled queries themselves, uneven clips included."""
    from benchmark.metrics import _recalls_and_ranks, _weighted_recalls_and_ranks

    g = torch.Generator().manual_seed(4)
    clip_of = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4, 4, 4])
    ranks = torch.tensor([0, 3, 0.5, 12, 1, 0, 7, 2, 9, 0, 4], dtype=torch.float64)
    draws = torch.randint(0, 5, (50, 5), generator=g)
    times = torch.zeros(50, 5, dtype=torch.float64).scatter_add_(1, draws, torch.ones(50, 5, dtype=torch.float64))
    weighted = _weighted_recalls_and_ranks(ranks, times, clip_of, chunk=7)
    for r in range(50):
        laid_out = torch.cat([ranks[clip_of == c] for c in draws[r].tolist()])
        direct = _recalls_and_ranks(laid_out)
        assert all(abs(float(weighted[k][r]) - float(direct[k])) < 1e-9 for k in direct), r


# Golden test for the scoring speed-up (issue 16 item 4): the reference below is the scoring code as it was before
# the fused pass (masked copy, two full-matrix comparisons per direction, topk on the unmasked matrix), kept here so
# any faster implementation must give exactly its ranks and top-10 indices, ties and missing clips included.

def _reference_tie_adjusted(greater, equal_others, ties):
    return {"average": lambda: greater + equal_others / 2, "optimistic": lambda: greater.to(torch.float64),
            "pessimistic": lambda: greater + equal_others}[ties]()


def _reference_text_to_clip(sim, caption_clip, ties, clip_valid):
    assert torch.isfinite(sim).all()
    if clip_valid is not None:
        sim = sim.masked_fill(~clip_valid.view(1, -1), float("-inf"))
    target = sim.gather(1, caption_clip.view(-1, 1))
    greater = (sim > target).sum(1).double()
    equal = (sim == target).sum(1).double() - 1
    ranks = _reference_tie_adjusted(greater, equal, ties)
    if clip_valid is not None:
        ranks[~clip_valid[caption_clip]] = float(sim.shape[1])
    return ranks


def _reference_clip_to_text(sim, caption_clip, ties, clip_valid):
    assert torch.isfinite(sim).all()
    own = sim[caption_clip, torch.arange(sim.shape[1])]
    best = torch.full((sim.shape[0],), float("-inf"), dtype=sim.dtype).scatter_reduce(0, caption_clip, own, "amax")
    best = best.view(-1, 1)
    greater = (sim > best).sum(1).double()
    equal = (sim == best).sum(1).double() - 1
    ranks = _reference_tie_adjusted(greater, equal, ties)
    if clip_valid is not None:
        ranks[~clip_valid] = float(sim.shape[1])
    return ranks


def _reference_score(enc, directions, ties, audio_valid=None, post="none", temperature=0.01):
    from benchmark.evaluate import DIRECTIONS, NEEDS
    from benchmark.metrics import postprocess

    out = {}
    for direction in directions:
        query, candidate = DIRECTIONS[direction]
        clip_side = candidate if query == "text" else query
        sim = enc.text @ enc.clips[clip_side].t()
        valid = audio_valid if audio_valid is not None and "audio" in NEEDS[query] | NEEDS[candidate] else None
        if query == "text":
            sim = postprocess(sim, post, temperature)
            ranks = _reference_text_to_clip(sim, enc.caption_clip, ties, valid)
        else:
            sim = postprocess(sim.t(), post, temperature)
            ranks = _reference_clip_to_text(sim, enc.caption_clip, ties, valid)
        out[direction] = ranks, sim.topk(min(10, sim.shape[1]), dim=1).indices  # unmasked: clips without audio too
    return out


def _golden_case(seed=0, clips=37, floats=False):
    """Captions shuffled over clips with 0 to 5 captions each (clip 5 has none), small integer features so that
    scores tie everywhere (top-10 places included), two clips with identical features, a fifth of the clips
    without audio. `floats`: unit Gaussian features instead (ties only where two clips or captions are the same),
    up to 9 captions a clip."""
    from benchmark.evaluate import Encoded

    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 10 if floats else 6, (clips,), generator=g)
    counts[5] = 0
    caption_clip = torch.arange(clips).repeat_interleave(counts)
    caption_clip = caption_clip[torch.randperm(len(caption_clip), generator=g)]

    def features(n):
        if floats:
            return torch.nn.functional.normalize(torch.randn(n, 16, generator=g), dim=-1)
        return torch.randint(-1, 2, (n, 4), generator=g).float()

    text = features(len(caption_clip))
    feats = {k: features(clips) for k in ("video", "audio", "fused")}
    feats["video"][7] = feats["video"][3]
    if floats:
        text[11] = text[2]  # a tied pair of captions in every clip's list
    audio_valid = torch.rand(clips, generator=g) > 0.2
    return Encoded(text, caption_clip, feats), audio_valid


GOLDEN_DIRECTIONS = ("t2v", "v2t", "t2a", "a2t", "t2va", "va2t")


@pytest.mark.parametrize("block,group", [(None, None), (1, 2), (7, 3), (64, 5)])
@pytest.mark.parametrize("post,temperature", [("none", 0.01), ("dual_softmax", 0.5), ("inverted_softmax", 0.01)])
@pytest.mark.parametrize("ties", ["average", "optimistic", "pessimistic"])
@pytest.mark.parametrize("floats", [False, True])
def test_scoring_equals_the_reference_exactly(floats, ties, post, temperature, block, group, monkeypatch):
    """Every direction, tie rule and post-processing, with missing audio, in any order of the directions and with
    the row blocks of the fused pass (`block` rows) and the row groups of the clip queries' top 10 (`group`), where
    the implementation has them, cut small: exactly the reference's ranks and top-10 indices."""
    from benchmark import metrics
    from benchmark.evaluate import score_directions

    if block is not None:
        monkeypatch.setattr(metrics, "BLOCK_ROWS", block, raising=False)
        monkeypatch.setattr(metrics, "TOP_GROUP", group, raising=False)
    enc, audio_valid = _golden_case(floats=floats)
    for directions in (GOLDEN_DIRECTIONS, ("va2t", "t2a", "v2t"), ("a2t",)):
        for valid in (audio_valid, None, torch.ones_like(audio_valid)):
            got = score_directions(enc, directions, ties, valid, post, temperature)
            want = _reference_score(enc, directions, ties, valid, post, temperature)
            assert list(got) == list(directions)
            for d in directions:
                assert got[d].ranks.dtype == torch.float64 and got[d].top10.dtype == torch.int64
                assert torch.equal(got[d].ranks, want[d][0]), (d, valid)
                assert torch.equal(got[d].top10, want[d][1]), (d, valid)


# Recorded with the scoring code before the fused pass: (sum of ranks, first 6 ranks, sum of top-10 indices,
# first query's top 10) per direction, and bootstrap intervals (200 resamples, seed 3).
GOLDEN_SUMMARY = {
    "t2v": (1600.5, [4.5, 17.5, 18.0, 18.0, 26.5, 17.0], 15891, [6, 11, 28, 24, 14, 30, 32, 21, 23, 4]),
    "v2t": (1507.5, [66.5, 14.0, 15.5, 81.5, 38.5, 81.5], 15068, [32, 19, 22, 23, 63, 26, 27, 30, 54, 41]),
    "t2a": (1362.0, [37.0, 4.5, 14.5, 14.5, 24.0, 12.5], 15093, [14, 12, 15, 10, 27, 9, 22, 16, 34, 36]),
    "a2t": (1590.5, [14.5, 18.5, 2.5, 81.5, 55.0, 81.5], 15605, [25, 29, 28, 60, 61, 62, 20, 21, 58, 24]),
    "t2va": (1456.5, [37.0, 13.5, 14.5, 14.5, 6.0, 13.5], 15080, [0, 13, 24, 6, 22, 11, 30, 32, 3, 7]),
    "va2t": (1616.5, [19.5, 17.5, 5.0, 81.5, 80.0, 81.5], 15388, [73, 43, 46, 0, 26, 27, 18, 15, 35, 48]),
}
GOLDEN_INTERVALS = {
    "t2v": {
        "t2v/R1": (0.0, 0.0),
        "t2v/R5": (5.093537414965987, 20.971717401181284),
        "t2v/R10": (11.492610837438423, 29.43304953560372),
        "t2v/MdR": (18.493750000000002, 26.0),
        "t2v/MnR": (18.80248268363402, 22.5080625),
    },
    "a2t": {
        "a2t/R1": (0.0, 0.0),
        "a2t/R5": (2.7027027027027026, 16.216216216216218),
        "a2t/R10": (5.405405405405405, 27.027027027027028),
        "a2t/MdR": (17.5, 63.0),
        "a2t/MnR": (35.2179054054054, 52.51317567567568),
    },
}


def test_scoring_golden_values():
    """Today's numbers on the golden case, recorded with the code before the fused pass."""
    from benchmark.evaluate import score_directions
    from benchmark.metrics import bootstrap_ci, query_clips

    enc, audio_valid = _golden_case()
    got = score_directions(enc, GOLDEN_DIRECTIONS, "average", audio_valid)
    summary = {d: (float(s.ranks.sum()), s.ranks[:6].tolist(), int(s.top10.sum()), s.top10[0].tolist())
               for d, s in got.items()}
    assert summary == GOLDEN_SUMMARY
    intervals = {d: bootstrap_ci(got[d].ranks, d, 200, seed=3, clips=query_clips(d, enc.caption_clip))
                 for d in ("t2v", "a2t")}
    # the same numbers to the last bits or so: the bootstrap's sums of doubles may round differently elsewhere
    assert intervals.keys() == GOLDEN_INTERVALS.keys()
    for d, want in GOLDEN_INTERVALS.items():
        assert intervals[d] == {k: pytest.approx(v, rel=1e-12, abs=1e-12) for k, v in want.items()}, d


def test_a_non_finite_similarity_is_refused_by_score_directions():
    from benchmark.errors import UserError
    from benchmark.evaluate import score_directions

    enc, audio_valid = _golden_case()
    enc.clips["audio"][2, 1] = float("nan")
    enc.clips["video"][4, 0] = float("inf")
    assert score_directions(enc, ("t2va", "va2t"), "average", audio_valid)  # the broken features are not used
    for d in GOLDEN_DIRECTIONS[:4]:
        with pytest.raises(UserError, match=f"non-finite similarity: {len(enc.text)} of {len(enc.text) * 37} "):
            score_directions(enc, (d,), "average", audio_valid)


@pytest.mark.parametrize("group", [2, 3, 5, 32])
def test_top_of_columns_is_topk_exactly(group, monkeypatch):
    """The grouped top-k of each column equals topk over the whole column, index for index: distinct scores
    (the grouped path), planted ties inside and at the edge of the top k, and integer scores tied everywhere (the
    fallback), with rows left over after the last whole group."""
    from benchmark import metrics

    monkeypatch.setattr(metrics, "TOP_GROUP", group)
    g = torch.Generator().manual_seed(5)
    for rows, cols in ((1, 4), (12, 3), (37, 5), (203, 17), (1000, 9)):
        sim = torch.randn(rows, cols, generator=g)
        if rows > 30:
            order = sim[:, 0].argsort(descending=True)
            sim[order[3], 0] = sim[order[1], 0]  # a tie inside column 0's top 10
            sim[order[10], 1] = sim[order[9], 1] = sim[:, 1].max()  # in column 1: a tie for first
            sim[order[25], 2] = sim[:, 2].sort(descending=True).values[9]  # in column 2: a tie for tenth place
        for case in (sim, sim.round(), sim.double(), sim.t().contiguous().t()):
            for k in (1, 10):
                want = case.t().topk(min(k, rows), dim=1).indices
                assert torch.equal(metrics.top_of_columns(case, k), want), (rows, cols, k)
