"""Retrieval metrics with an explicit caption-to-clip mapping (spec §10.1).

Conventions (documented in README):
- text -> clip: each caption is a query; its one correct clip is ranked among all clips.
- clip -> text: each clip is a query; its rank is the best rank among its own captions (other captions of the
  same clip never count against it, because the best one is ranked above them).
- ranks are 0-based; ties are `average` (the authors' t2v_metrics: the mean of the tied positions),
  `optimistic` or `pessimistic`. R@K = % of queries with rank < K, R@1 = % with rank exactly 0 (a tied first
  place is not a hit, as the authors count it); MdR = median + 1; MnR = mean + 1.
- missing items (the `miss` policy): a clip that lacks a modality can never be retrieved, and a query whose
  clip lacks it gets the worst rank, so it counts as a miss.
- post-processing (off by default, recorded when on): dual softmax (CAMoE) re-weights each score by a softmax
  over the queries; inverted softmax (Bogolin et al.) normalises each candidate's scores over the queries.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile

import torch

from benchmark.errors import UserError

log = logging.getLogger("clip4vla")

RECALL_AT = (1, 5, 10)


def _tie_adjusted(greater: torch.Tensor, equal_others: torch.Tensor, ties: str) -> torch.Tensor:
    if ties == "average":
        return greater + equal_others / 2
    if ties == "optimistic":
        return greater.to(torch.float64)
    if ties == "pessimistic":
        return greater + equal_others
    raise ValueError(f"unknown tie rule '{ties}'")


def postprocess(sim: torch.Tensor, method: str, temperature: float) -> torch.Tensor:
    """sim [queries, candidates] -> re-scored similarities; `none` returns it unchanged."""
    if method == "none":
        return sim
    prior = torch.softmax(sim / temperature, dim=0)  # over the queries, for each candidate
    if method == "dual_softmax":
        return sim * prior
    if method == "inverted_softmax":
        return prior
    raise ValueError(f"unknown post-processing '{method}'")


def _finite(sim: torch.Tensor) -> torch.Tensor:
    """`sim` unchanged, or a UserError: a NaN compares unequal to itself, so `(sim == target).sum() - 1` would
    give its query rank -0.5, an R@1 hit (a NaN model scored R@1 = 100 before this check)."""
    # aminmax first: one cheap pass with no [Q, N] bool temporary; a NaN propagates to both ends and an Inf is
    # the minimum or the maximum, so only a broken matrix pays for the exact count
    if sim.numel() and all(torch.isfinite(end) for end in torch.aminmax(sim)):
        return sim
    bad = int((~torch.isfinite(sim)).sum())
    if bad:
        raise UserError(f"non-finite similarity: {bad} of {sim.numel()} scores are NaN or Inf; the model or its "
                        "inputs are broken, and no rank can be trusted")
    return sim


BLOCK_ROWS = 0  # rows per block of the fused pass; 0 sizes blocks by BLOCK_ELEMENTS (tests cut them small)
BLOCK_ELEMENTS = 1 << 20  # 4 MiB of float32 scores: in L3, and few enough blocks that per-call overhead is small


def text_to_clip_ranks(sim: torch.Tensor, caption_clip: torch.Tensor, ties: str = "average",
                       clip_valid: torch.Tensor | None = None) -> torch.Tensor:
    """sim [Q captions, N clips], caption_clip [Q] -> 0-based rank of each caption's clip, float64 [Q].

    `clip_valid` [N] bool: clips without the compared modality are never retrieved and their captions miss.
    """
    return caption_clip_ranks(sim, caption_clip, ties, clip_valid, clips=False)[0]


def clip_to_text_ranks(sim: torch.Tensor, caption_clip: torch.Tensor, ties: str = "average",
                       clip_valid: torch.Tensor | None = None) -> torch.Tensor:
    """sim [N clips, Q captions], caption_clip [Q] -> 0-based rank of each clip's best caption, float64 [N]."""
    return caption_clip_ranks(sim.t(), caption_clip, ties, clip_valid, text=False)[2]


def caption_clip_ranks(sim: torch.Tensor, caption_clip: torch.Tensor, ties: str = "average",
                       clip_valid: torch.Tensor | None = None, text: bool = True, clips: bool = True,
                       top: int = 0) -> tuple[torch.Tensor | None, ...]:
    """Both directions of one caption-by-clip matrix, sim [Q captions, N clips], in one pass over blocks of rows:
    (text-to-clip ranks [Q], their `top` best clips [Q, top], clip-to-text ranks [N], their `top` best captions
    [N, top]), None for a direction not asked (`text`, `clips`) and for the candidates when `top` is 0.

    The ranks are those of `text_to_clip_ranks` / `clip_to_text_ranks` (the matrix's transpose): the count of
    candidates scored above the target and of those tied with it, each query's target being its own clip's score
    (text) or its best caption's (clips); `clip_valid` masks clips out of the text queries' candidates only. The
    candidates are `topk` of the unmasked rows (text) and columns (clips), as scored.

    Why blocks: two full-matrix comparisons per direction wrote [Q, N] bool temporaries (22.5 MB each at 15,000 x 1,500,
    freshly page-faulted) and summed bools to int64, ~5x slower than counting a block that stays in cache with
    the comparison written straight into a float buffer (whole numbers below 2**24 sum exactly in float32).
    """
    _finite(sim)
    n_captions, n_clips = sim.shape
    own = sim.gather(1, caption_clip.view(-1, 1))  # each caption's score for its own clip, [Q, 1]
    count = {"dtype": torch.float32 if max(sim.shape) < 2**24 else torch.float64, "device": sim.device}  # exact
    rows = BLOCK_ROWS or max(1, BLOCK_ELEMENTS // max(n_clips, 1))
    buffer = torch.empty(min(rows, n_captions), n_clips, **count)
    if text:
        greater_t = torch.empty(n_captions, **count)
        equal_t = torch.empty(n_captions, **count)
        top_t = torch.empty(n_captions, min(top, n_clips), dtype=torch.int64, device=sim.device) if top else None
        # A clip without the modality scores -inf for the text queries, above and equal to no caption's own (finite)
        # score: its column is counted and then taken off again, which costs a gather of those few columns where
        # a masked copy of the whole matrix cost a pass. A caption of such a clip misses whatever its counts.
        missing = (~clip_valid).nonzero().view(-1) if clip_valid is not None else torch.empty(0, dtype=torch.int64)
        few = torch.empty(min(rows, n_captions), len(missing), **count)
    if clips:
        best = torch.full((n_clips,), float("-inf"), dtype=sim.dtype, device=sim.device)
        best = best.scatter_reduce(0, caption_clip, own.view(-1), "amax").view(1, -1)  # each clip's best caption
        greater_c = torch.zeros(n_clips, dtype=torch.float64, device=sim.device)
        equal_c = torch.zeros(n_clips, dtype=torch.float64, device=sim.device)
    for start in range(0, n_captions, rows):
        block = sim[start : start + rows]
        flags = buffer[: len(block)]
        if text:
            aim, greater, equal = (part[start : start + rows] for part in (own, greater_t, equal_t))
            torch.sum(torch.gt(block, aim, out=flags), 1, out=greater)
            torch.sum(torch.eq(block, aim, out=flags), 1, out=equal)
            if len(missing):
                absent = block[:, missing]
                greater -= torch.gt(absent, aim, out=few[: len(block)]).sum(1)
                equal -= torch.eq(absent, aim, out=few[: len(block)]).sum(1)
            if top_t is not None:
                top_t[start : start + rows] = block.topk(top_t.shape[1], dim=1).indices
        if clips:
            greater_c += torch.gt(block, best, out=flags).sum(0)
            equal_c += torch.eq(block, best, out=flags).sum(0)
    out: list[torch.Tensor | None] = [None, None, None, None]
    if text:
        out[0] = _tie_adjusted(greater_t.double(), equal_t.double() - 1, ties)
        if clip_valid is not None:
            out[0][~clip_valid[caption_clip]] = float(n_clips)  # worse than any real rank: a miss
        out[1] = top_t
    if clips:
        out[2] = _tie_adjusted(greater_c, equal_c - 1, ties)
        if clip_valid is not None:
            out[2][~clip_valid] = float(n_captions)
        if top:
            out[3] = top_of_columns(sim, top)
    return tuple(out)


TOP_GROUP = 16  # rows per group in top_of_columns: the fastest of 8-200 (one core, 15,000 x 1,500 and 4,875 x 975)


def top_of_columns(sim: torch.Tensor, k: int) -> torch.Tensor:
    """`sim.t().topk(min(k, rows), dim=1).indices` (each column's best rows, best first), exactly, ties included;
    the scores finite (`_finite`).

    Why not that call: it reads each column with a stride of a whole row (150 ms for 15,000 x 1,500 on one core).
    Instead, the rows are cut into groups of TOP_GROUP and the maximum of each group taken down each column (one
    contiguous pass). A column's k + 1 largest values are all found in its k + 1 groups with the largest maxima and
    the rows left over: those k + 1 maxima are themselves k + 1 candidates at least as large as anything outside.
    Where those k + 1 values are all different, the column's top k is unique, and so what any topk returns; a
    column with a tie among them (equal scores, whose order is up to topk's algorithm) is ranked by topk itself,
    over the whole column.
    """
    rows, cols = sim.shape
    k = min(k, rows)
    groups = rows // TOP_GROUP
    if groups <= k + 1:  # too few rows for the groups to save anything
        return sim.t().topk(k, dim=1).indices
    whole = groups * TOP_GROUP
    maxima = sim[:whole].unflatten(0, (groups, TOP_GROUP)).amax(1)  # [groups, cols]
    chosen = maxima.t().topk(k + 1, dim=1).indices  # [cols, k + 1]
    candidates = (chosen.unsqueeze(2) * TOP_GROUP + torch.arange(TOP_GROUP, device=sim.device)).flatten(1)
    if whole < rows:
        candidates = torch.cat([candidates, torch.arange(whole, rows, device=sim.device).expand(cols, -1)], 1)
    values, at = sim.t().gather(1, candidates).topk(k + 1, dim=1)
    top = candidates.gather(1, at[:, :k])
    tied = (values[:, :-1] <= values[:, 1:]).any(1).nonzero().view(-1)
    if len(tied):
        top[tied] = sim[:, tied].t().topk(k, dim=1).indices
    return top


def rank_metrics(ranks: torch.Tensor, prefix: str) -> dict[str, float]:
    """0-based ranks -> {prefix/R1, R5, R10 (percent), MdR, MnR}."""
    return {f"{prefix}/{k}": float(v) for k, v in _recalls_and_ranks(ranks.cpu()).items()}


def _recalls_and_ranks(ranks: torch.Tensor) -> dict[str, torch.Tensor]:
    """Metrics over the last dimension of `ranks` (any leading batch shape), as tensors."""
    out = {f"R{k}": 100.0 * _hits(ranks, k).double().mean(-1) for k in RECALL_AT}
    ordered, n = ranks.double().sort(dim=-1).values, ranks.shape[-1]
    out["MdR"] = (ordered[..., (n - 1) // 2] + ordered[..., n // 2]) / 2 + 1  # np.median: mean of the middle two
    out["MnR"] = ranks.double().mean(-1) + 1
    return out


def _hits(ranks: torch.Tensor, k: int) -> torch.Tensor:
    """R@K hits: rank < K, except R@1, which counts only rank exactly 0, as the authors' metric does
    (`np.sum(cols == 0)`, spec §10.1): a first place tied with another candidate (rank 0.5 under average ties)
    is not a hit. Under optimistic and pessimistic ties ranks are whole numbers and both rules agree."""
    return ranks == 0 if k == 1 else ranks < k


def bootstrap_ci(ranks: torch.Tensor, prefix: str, resamples: int = 1000, seed: int = 0, level: float = 0.95,
                 baseline: torch.Tensor | None = None, clips: torch.Tensor | None = None
                 ) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap: {prefix/metric: (low, high)}.

    `clips` [Q] (the clip of each query) resamples clips, each with all of its queries: a text-to-clip
    direction's queries are captions, and the 5 or 10 captions of one clip in a retrieval test set are not
    independent draws, so resampling captions alone gives intervals too narrow (issue 15). Without it, each query
    is its own unit (a clip-to-text direction's queries are the clips). With `baseline` (ranks of another run on
    the same queries), the same resamples score both runs and the interval is for the paired difference (this run
    minus the baseline; no caller yet: the report's ablations pair seeds).

    A resample draws each unit a whole number of times; its metrics are the queries' metrics weighted by how
    often their unit was drawn (the same numbers as the resampled queries laid end to end), so clips with
    different numbers of captions need no padding.
    """
    units = clips if clips is not None else torch.arange(ranks.shape[0])
    count = int(units.max()) + 1 if len(units) else 0
    g = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, count, (resamples, count), generator=g)
    times = torch.zeros(resamples, count, dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(resamples, count, dtype=torch.float64))
    stats = _weighted_recalls_and_ranks(ranks, times, units)
    if baseline is not None:
        base = _weighted_recalls_and_ranks(baseline, times, units)
        stats = {k: v - base[k] for k, v in stats.items()}
    alpha = (1 - level) / 2
    return {f"{prefix}/{k}": (float(v.quantile(alpha)), float(v.quantile(1 - alpha))) for k, v in stats.items()}


def query_clips(direction: str, caption_clip: torch.Tensor) -> torch.Tensor | None:
    """The bootstrap's unit for each query of `direction` (`bootstrap_ci(clips=)`): a caption query's clip, or
    None when the queries are the clips themselves."""
    return caption_clip if direction.startswith("t2") else None


def _weighted_recalls_and_ranks(ranks: torch.Tensor, times: torch.Tensor, units: torch.Tensor,
                                chunk: int = 100) -> dict[str, torch.Tensor]:
    """`_recalls_and_ranks` of each resample [R] given how often each unit was drawn (`times` [R, units]):
    queries weighted by their unit's count, the median that of the weighted multiset (np.median: the mean of
    its middle two). Resamples go `chunk` at a time ([chunk, Q] doubles: 12 MB for 15,000 captions)."""
    ranks = ranks.double().cpu()
    order = ranks.argsort()
    ordered, units = ranks[order], units[order]
    hits = {k: _hits(ordered, k).double() for k in RECALL_AT}
    parts: dict[str, list[torch.Tensor]] = {}
    for times_part in times.split(chunk):
        weight = times_part[:, units]  # [chunk, Q], in rank order
        total = weight.sum(1)
        out = {f"R{k}": 100.0 * (weight * hit).sum(1) / total for k, hit in hits.items()}
        cumulative = weight.cumsum(1)
        middle = torch.stack([(total - 1) // 2, total // 2], dim=1)  # 0-based positions in the multiset
        at = torch.searchsorted(cumulative, middle, right=True).clamp(max=len(ordered) - 1)
        out["MdR"] = ordered[at].mean(1) + 1
        out["MnR"] = (weight * ordered).sum(1) / total + 1
        for key, value in out.items():
            parts.setdefault(key, []).append(value)
    return {key: torch.cat(values) for key, values in parts.items()}


CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
_METEOR = []  # one METEOR scorer per process: its JVM takes ~7 s to start


JAVA_NOISE = ("PTBTokenizer tokenized", "WARNING: Untokenizable")  # per call; per emoji half (with a date line)


@contextlib.contextmanager
def java_stderr_logged():
    """pycocoevalcap's PTBTokenizer runs Java on this process's stderr, which prints a rate line per call and the
    lexer's "Untokenizable" warnings (halves of emoji): 14% of the smoke log (issue 15). For the call, file
    descriptor 2 points at a temporary file; that known noise is logged at DEBUG, anything else Java wrote (a
    failing JVM: pycocoevalcap does not check its exit status) at WARNING. With no stderr to redirect (a closed
    descriptor), the call runs as it is."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines():
                noise = line.startswith(JAVA_NOISE) or "edu.stanford.nlp.process.PTBLexer" in line
                log.log(logging.DEBUG if noise else logging.WARNING, "pycocoevalcap's Java: %s", line)


def caption_scores(references: dict[str, list[str]], candidates: dict[str, str]) -> dict[str, float]:
    """BLEU-1..4, METEOR, ROUGE-L and CIDEr(-D) from pycocoevalcap over the whole split at once (CIDEr uses
    corpus document frequencies), after its PTB tokenisation, with every reference of each clip; x 100."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    with java_stderr_logged():
        gts = tokenizer.tokenize({k: [{"caption": c} for c in refs] for k, refs in references.items()})
        res = tokenizer.tokenize({k: [{"caption": candidates[k]}] for k in references})
    if not _METEOR:
        _METEOR.append(Meteor())
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):  # Bleu prints its internal counts on every call
        bleu, _ = Bleu(4).compute_score(gts, res)
    out.update({f"Bleu_{n + 1}": 100.0 * b for n, b in enumerate(bleu)})
    out["METEOR"] = 100.0 * _METEOR[0].compute_score(gts, res)[0]
    out["ROUGE_L"] = 100.0 * Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = 100.0 * Cider().compute_score(gts, res)[0]
    return out