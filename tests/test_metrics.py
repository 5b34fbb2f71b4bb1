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
