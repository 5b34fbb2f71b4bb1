"""The comparison report as a reader sees it (issue 15): report.html in headless Chromium (no broken image, fits
1280 px, contents links resolve), the summary first, the generated-data banner, our rows highlighted, many
baselines folded away, the provenance section, one number format, and tables.tex on an A4 page."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess

import pandas as pd
import pytest
from helpers import ours, paper, published

from reports.collect import PROVENANCE_COLUMNS, curve_keys
from reports.plots import plot_ablation
from reports.render import GENERATED_DATA, write_comparison_report
from reports.tables import OFFICIAL_LOG_METHOD, paired_ablation

MAIN_SCORES = {"msrvtt_retrieval": "t2va/R1", "vatex_retrieval": "t2va/R1", "audiocaps_caption": "CIDEr"}
DIRECTIONS = ("t2v", "v2t", "t2a", "a2t", "t2va", "va2t")
METRICS = {"R1": 40.0, "R5": 70.0, "R10": 80.0, "MdR": 2.0, "MnR": 15.5}
LONG_COMMAND = "clip4vla sweep paper --out /scratch/a-rather-long-folder-name/clip4vla-runs " + "x=1 " * 40
# Chromium refuses to run as root without --no-sandbox; the machines that run CI are throwaway containers.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,900"]


def full_report(tmp_path, generated=True):
    """A report with every part a paper-scale one has: three tasks, six directions, seeds and a bootstrap
    interval, many baselines on one table, three variants, loss-term curves and the provenance of every run."""
    frames = []
    for variant, shift in (("full", 0.0), ("no_intra", -2.0), ("no_audio_type_token", -1.0)):
        for direction in DIRECTIONS:
            for metric, value in METRICS.items():
                frames.append(ours([value + shift + s for s in (0.0, 0.4, 0.9)], variant=variant,
                                   direction=direction, metric=metric))
    for direction in DIRECTIONS:
        for metric, value in METRICS.items():
            frames.append(ours([value], task="vatex_retrieval", direction=direction, metric=metric,
                               ci=(value - 1.2, value + 1.3)))
    for metric in ("Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        frames.append(ours([0.45, 0.61], task="audiocaps_caption", direction="caption", metric=metric))
    results = pd.concat(frames, ignore_index=True)
    baselines = pd.DataFrame(
        [paper(41.0, direction="t2va"), published(OFFICIAL_LOG_METHOD, 39.5, direction="t2v"),
         *(published(f"Method {i} with a long name", 30.0 + i, direction="t2v", metric=m)
           for i in range(6) for m in ("R1", "R5", "R10", "MdR", "MnR")),
         published("Other protocol method", 20.0, direction="t2v", comparability="context")]
    )
    curves = pd.DataFrame(
        [{"task": "msrvtt_retrieval", "stage": "finetune", "variant": variant, "seed": seed, "step": step,
          "key": key, "value": 3.0 - step / 10 + seed, "run_id": "r"}
         for variant in ("full", "no_intra") for seed in (0, 1) for step in (0, 10, 20)
         for key in ("train/t2v_loss", "train/v2t_loss", "train/t2a_loss", "select/score")]
    )
    provenance = pd.DataFrame(
        [{"task": task, "variant": variant, "seed": seed, "run_id": f"{task}-{variant}-{seed}", "split": "test",
          "protocol": "paper", "protocol_fingerprint": "abc123abc123", "data_manifest": "5d41402abc4b2a76",
          "data_generated": str(generated), "git_sha": "0123456789abcdef0123456789abcdef01234567",
          "git_dirty": "False", "device": "cuda:0", "world_size": "8", "hardware": "NVIDIA H200",
          "command": LONG_COMMAND, "packages": "torch 2.11.0, open_clip_torch 3.3.0, mlflow 3.17.2"}
         for task, variant, seed in results[["task", "variant", "seed"]].drop_duplicates().itertuples(index=False)],
        columns=PROVENANCE_COLUMNS,
    )
    return write_comparison_report(results, curves, baselines, tmp_path, "CLIP4VLA reproduction", MAIN_SCORES,
                                   provenance=provenance, command="clip4vla report --out runs")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """full_report's files, written once for the tests that only read them."""
    return full_report(tmp_path_factory.mktemp("report"))


def chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("CLIP4VLA_REQUIRE_BROWSER"):  # .ci/run installs it: never skip there
        pytest.fail("CLIP4VLA_REQUIRE_BROWSER is set but no chromium is installed (apt install chromium)")
    return found


PROBE = """<script>
window.addEventListener("load", () => {
  const images = [...document.images];
  const links = [...document.querySelectorAll('a[href^="#"]')];
  const probe = {
    images: images.length,
    broken: images.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    links: links.length,
    deadLinks: links.filter(a => !document.getElementById(a.getAttribute("href").slice(1))).length,
  };
  const out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(probe);
  document.body.appendChild(out);
});
</script>"""


def test_report_html_in_headless_chromium(report, tmp_path):
    """The page loads with every image decoded, fits 1280 px without horizontal scrolling, and every contents
    link lands on a section."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed (apt install chromium); .ci/run installs it")
    page = report["html"]
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = subprocess.run([browser, *CHROMIUM_FLAGS, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, f"the page did not finish loading in Chromium: {dom[-500:]}"
    probe = json.loads(html.unescape(found.group(1)))
    assert probe["images"] >= 2 and probe["broken"] == 0
    assert probe["scrollWidth"] <= probe["innerWidth"] == 1280
    assert probe["links"] >= 6 and probe["deadLinks"] == 0


def test_summary_comes_first_then_contents(report):
    page = report["html"].read_text(encoding="utf-8")
    banner, summary, contents = (page.index(s) for s in ('class="banner"', "<h3>Main scores</h3>", "<nav>"))
    assert banner < summary < contents < page.index('id="msrvtt_retrieval"')
    summary_table = page[summary:contents]
    # msrvtt: ours 40.4 ± 1.1 over three seeds against the paper's 41.0 (its t2va row), Δ -0.6, seeds 0, 1, 2
    cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>.*?</td>", summary_table)]
    assert cells[:8] == ["msrvtt_retrieval", "t2va/R1", "40.4 ± 1.1", "41.0 (E)", "CLIP4VLA (paper), test", "-0.6",
                         "inconclusive", "0, 1, 2"]
    assert '<td class="num">40.4 ± 1.1</td>' in summary_table  # numbers right-aligned, text left
    assert "<td>audiocaps_caption</td><td>CIDEr</td>" in summary_table


def test_banner_only_over_generated_data(report, tmp_path):
    assert html.escape(GENERATED_DATA) in report["html"].read_text(encoding="utf-8")
    real = full_report(tmp_path, generated=False)
    assert html.escape(GENERATED_DATA) not in real["html"].read_text(encoding="utf-8")
    assert GENERATED_DATA not in real["md"].read_text(encoding="utf-8")


def test_our_rows_are_highlighted_and_many_baselines_fold_away(report):
    page = report["html"].read_text(encoding="utf-8")
    t2v = page[page.index("<h3>msrvtt_retrieval — t2v</h3>"):page.index("<h3>msrvtt_retrieval — v2t</h3>")]
    assert '<tr class="ours"><td>ours (full, 3 seeds)</td>' in t2v
    assert '<tr class="ours"><td>verdict</td>' in t2v
    folded = t2v[t2v.index("<details>"):]
    assert "9 more rows: published baselines" in folded  # 6 methods, the official log, the separator, a context row
    assert "Method 5 with a long name" in folded and "ours (" not in folded
    v2t = page[page.index("<h3>msrvtt_retrieval — v2t</h3>"):]
    assert "<details>" not in v2t[:v2t.index("</ul>")]  # no baselines there: nothing folded


def test_provenance_names_code_data_hardware_and_commands(report):
    markdown = report["md"].read_text(encoding="utf-8")
    provenance = markdown[markdown.index("## Provenance"):]
    assert "This report: clip4vla report --out runs, from git " in provenance
    assert re.search(r"\| msrvtt_retrieval +\| no_intra +\| 0, 1, 2 +\| test +\| paper +\| abc123abc123 +\| "
                     r"5d41402abc4b2a76 +\| generated +\| 0123456789 +\| NVIDIA H200 x8 +\|", provenance)
    assert "Package versions: torch 2.11.0, open_clip_torch 3.3.0, mlflow 3.17.2." in provenance
    assert f"Commands of the runs: {LONG_COMMAND}." in provenance


def test_one_number_format_for_every_metric(report):
    """Caption scores below 1 once printed "0.450" next to "46.1": every number now has one decimal."""
    markdown = report["md"].read_text(encoding="utf-8")
    cells = markdown[markdown.index("## msrvtt_retrieval"):markdown.index("## Training curves")]
    numbers = re.findall(r"(?<![\w.])[+-]?\d+\.\d+(?![\w.])", cells)
    assert numbers and all(len(n.split(".")[1]) == 1 for n in numbers)
    assert "| ours (full, 2 seeds) |" in markdown and "0.5 ±" in markdown


def test_ablation_plot_has_no_empty_panel(tmp_path):
    results = pd.concat([ours([40, 41]), ours([39, 40], variant="no_intra"),
                         ours([30], task="vatex_retrieval"), ours([29], task="vatex_retrieval", variant="no_intra",
                                                                  seeds=[7])])
    ablation = paired_ablation(results, pd.DataFrame([paper(41.0)]), MAIN_SCORES)
    assert list(ablation["n_pairs"]) == [2, 0]
    assert plot_ablation(ablation[ablation["task"] == "vatex_retrieval"], tmp_path / "a.png") is None
    assert plot_ablation(ablation, tmp_path / "b.png").exists()


def test_curves_plot_each_loss_term_not_their_total():
    run = {"metrics": {"train/loss": 3.0, "train/t2a_loss": 1.0, "train/intra_loss": 2.0, "train/lr": 1e-4}}
    assert curve_keys(run) == ["train/intra_loss", "train/t2a_loss", "select/score"]


def test_tables_tex_fits_an_a4_page(report, tmp_path):
    """Every table has a label, right-aligned numeric columns and fits the text width of an A4 page (LaTeX
    reports no overfull box); the compile runs where pdflatex is installed, as .ci/run installs it."""
    shutil.copy(report["tex"], tmp_path / "tables.tex")
    tex = report["tex"].read_text(encoding="utf-8")
    assert tex.count(r"\label{tab:") == tex.count(r"\begin{table}") > 10
    assert r"\fitwidth{\begin{tabular}{lrrrrr}" in tex
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        if os.environ.get("CLIP4VLA_REQUIRE_LATEX"):
            pytest.fail("CLIP4VLA_REQUIRE_LATEX is set but pdflatex is missing (apt install texlive-latex-recommended)")
        pytest.skip("pdflatex is not installed: the layout was checked, the compile was not")
    document = tmp_path / "page.tex"
    document.write_text("\\documentclass[a4paper]{article}\\usepackage[T1]{fontenc}\\usepackage[utf8]{inputenc}"
                        "\\usepackage{booktabs}\\usepackage{graphicx}\\begin{document}\\input{tables}"
                        "\\end{document}\n", encoding="utf-8")
    compiled = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", document.name],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "page.log").read_text(encoding="latin-1")
    assert compiled.returncode == 0, log[-2000:]
    assert "Overfull \\hbox" not in log, re.findall(r"Overfull \\hbox \(([\d.]+pt) too wide\)", log)
