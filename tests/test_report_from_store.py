"""`clip4vla report` on a fabricated tracking store with known numbers: means, intervals, deltas, verdicts."""

from __future__ import annotations

import re

import pytest

import baselines
from benchmark.cli import main
from benchmark.tracking import Tracker

EXPERIMENT = "clip4vla-fabricated"
# t2va/R1 per seed; the paper's number is filled in below as 43.0: full's 95% interval 42.0 ± 4.97 holds it
FULL = {0: 40.0, 1: 42.0, 2: 44.0}
NO_INTRA = {0: 38.0, 1: 41.0, 2: 41.0}  # paired deltas -2, -1, -3: mean -2.0 ± 2.48, contains 0
NO_AUDIO = {0: 30.0, 1: 31.0, 2: 32.0}  # video only (t2v); deltas -10, -11, -12: mean -11.0 ± 2.48, hurts


def log_plan_run(tracker, parent, variant, seed, metrics, modalities=None, status_ok=True, label="finetuned",
                 key=None):
    """One plan run as a sweep logs it: the plan run, a fine-tuning run and an evaluation nested in it."""
    key = key or f"key-{variant}-{seed}"
    tags = {"sweep.key": key, "variant": variant, "seed": seed, "role": "plan-run"}
    eval_tags = {"sweep.key": key, "variant": variant, "seed": seed, "stage": "evaluate", "label": label,
                 "task": "msrvtt_retrieval", "split": "test_1k_a", "protocol": "paper",
                 "protocol_fingerprint": "fp0123456789", "count.clips_used": 1000, "count.clips_listed": 1000,
                 "count.missing_video": 0, "count.missing_audio": 32}
    def log():
        with tracker.run(f"msrvtt_retrieval/{variant}/seed{seed}", parent, tags) as plan:
            with tracker.run("finetune/msrvtt_retrieval", plan, {**eval_tags, "stage": "finetune"}) as train:
                for step, loss in ((1, 3.0), (2, 2.5), (3, 2.0)):
                    train.log_metrics({"train/loss": loss}, step)
            with tracker.run(f"evaluate/{label}", plan, eval_tags) as run:
                run.log_params({"modalities": modalities})
                run.log_metrics(metrics)
            if not status_ok:
                raise RuntimeError("crashed after its evaluation")

    if status_ok:
        log()
    else:
        with pytest.raises(RuntimeError, match="crashed after its evaluation"):
            log()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    out = tmp_path_factory.mktemp("fabricated")
    tracker = Tracker(f"sqlite:///{out}/mlruns.db", EXPERIMENT, out / "mlartifacts")
    with tracker.run("sweep fabricated", tags={"suite": "fabricated"}) as parent:
        # an older run of seed 0 under another key (its suite changed since): superseded, not a fourth seed
        log_plan_run(tracker, parent, "full", 0, {"t2va/R1": 10.0}, key="key-before-an-edit")
        for seed in FULL:
            log_plan_run(tracker, parent, "full", seed, {"t2va/R1": FULL[seed], "t2v/R1": FULL[seed] - 5})
            log_plan_run(tracker, parent, "full", seed, {"t2va/R1": 0.0}, label="initial")  # not a result
            log_plan_run(tracker, parent, "no_intra", seed, {"t2va/R1": NO_INTRA[seed]})
            log_plan_run(tracker, parent, "no_audio", seed, {"t2v/R1": NO_AUDIO[seed]}, ["text", "video"])
        # a plan run that failed after its evaluation never counts, whatever it logged
        log_plan_run(tracker, parent, "no_intra", 3, {"t2va/R1": 99.0}, status_ok=False)
    published = out / "published.csv"
    rows = baselines.DEFAULT.read_text().splitlines()
    paper = "CLIP4VLA (paper),full,MSR-VTT,test_1k_a,msrvtt_retrieval,t2va,R1,"
    edited = [re.sub(r",pending,", ",E,", line.replace(paper + ",", paper + "43.0,")) if line.startswith(paper)
              else line for line in rows]
    assert edited != rows  # the one-line edit that fills in a paper number
    published.write_text("\n".join(edited) + "\n")
    return out, published


def test_report_from_store_gives_known_means_intervals_deltas_and_verdicts(store):
    out, published = store
    assert main(["report", "--out", str(out), "--experiment", EXPERIMENT, "--baselines", str(published)]) == 0
    report = (out / "report.md").read_text()
    t2va = report[report.index("### msrvtt_retrieval — t2va"):report.index("### msrvtt_retrieval — va2t")
                  if "### msrvtt_retrieval — va2t" in report else None]
    row = lambda name: next(line for line in t2va.splitlines() if line.startswith(f"| {name}"))  # noqa: E731
    assert "43.0 (E)" in row("reference")
    assert "42.0 ± 5.0" in row("ours (full, 3 seeds)")  # t(0.975, 2) * 2 / sqrt(3) = 4.97
    assert "-1.0" in row("Δ vs reference") and "inconclusive" in row("verdict")
    assert "fp0123456789" in t2va and "missing audio 32" in t2va

    ablations = report[report.index("## Ablations"):]
    no_intra = next(line for line in ablations.splitlines() if re.match(r"\|\s*msrvtt_retrieval\s*\|\s*no_intra", line))
    assert "-2.0 ± 2.5" in no_intra and "no clear difference" in no_intra and re.search(r"\|\s*3\s*\|", no_intra)
    assert "99" not in no_intra  # the failed run
    no_audio = next(line for line in ablations.splitlines() if re.match(r"\|\s*msrvtt_retrieval\s*\|\s*no_audio", line))
    assert "-11.0 ± 2.5" in no_audio and "hurts" in no_audio
    assert (out / "tables.tex").is_file() and "data:image/png;base64" in (out / "report.html").read_text()
    assert (out / "plots" / "ablation.png").is_file()


def test_report_with_the_shipped_baselines_takes_the_official_log_where_the_paper_is_pending(store, tmp_path):
    out, _ = store
    assert main(["report", "--out", str(tmp_path), "--tracking-uri", f"sqlite:///{out}/mlruns.db"]) == 0
    report = (tmp_path / "report.md").read_text()
    t2va = report[report.index("### msrvtt_retrieval — t2va"):]
    assert re.search(r"\| reference\s*\|\s*46\.2 \(E\)", t2va)  # the authors' log, epoch 3: R@1 46.2
    assert ("reference on test_1k_a: CLIP4VLA (official log) (context: another protocol) for R1, R5, R10, "
            "MdR") in t2va  # the log selected its epoch on the test set
    assert "(S)" in t2va  # published baselines with their confidence code


def test_report_errors_are_one_line(store, tmp_path, capsys):
    out, _ = store
    for args, message in (
        (["--out", str(tmp_path)], "no tracking store"),
        (["--out", str(out), "--experiment", "clip4vla-fabricatd"], "did you mean 'clip4vla-fabricated'"),
        (["--out", str(out), "--reference", "fulll"], "did you mean 'full'"),
        (["--out", str(out), "--margin", "CIDer=3"], "did you mean 'CIDEr'"),
        (["--out", str(out), "--margin", "R1=-1"], "a finite VALUE >= 0"),
        (["--out", str(out), "--margin", "R1=nan"], "a finite VALUE >= 0"),
        (["--out", str(tmp_path), "--tracking-uri", "bogus://x"], "cannot read the tracking store"),
    ):
        assert main(["report", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)


def test_runs_made_outside_a_suite_are_their_own_reference(msrvtt_small, tiny_config, tmp_path):
    out = tmp_path / "single"
    assert main(["evaluate", "msrvtt_retrieval", "--config", str(tiny_config), "--out", str(out),
                 f"data.root={msrvtt_small[0].parent}", "eval.bootstrap=0"]) == 0
    assert main(["report", "--out", str(out)]) == 0  # the store's only experiment; its one variant
    report = (out / "report.md").read_text()
    assert re.search(r"\| ours \(default, 1 seed\)\s*\|\s*\d", report)
    assert main(["report", "--out", str(out), "--reference", "fulll"]) == 2
