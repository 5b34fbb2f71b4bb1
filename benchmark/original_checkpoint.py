"""`clip4vla import-checkpoint`: the authors' CLIP4VLA `pytorch_model.bin` -> a checkpoint that
`clip4vla evaluate TASK --checkpoint FILE` (and `model.init`) takes, so their released models are scored under
this suite's protocol.

Which model wrote the file shows in its keys (`modeling.py` builds parts by task): an LM head (`cls.*`) means
captioning, or pre-training when that head is exactly as initialised (the pre-training model builds the cross
transformer and the caption head and never trains them, spec §12 item 21c: both are left out here, as this
suite's pre-training builds neither); otherwise retrieval, with `loose_seq` fusion when it has the cross
transformer (`--train_sim_after_cross`, spec §2.5). The file written holds `model` (this suite's state dict,
fp32), what has no place in it (`dropped_rows`, `left_out`: with them the inverse map gives the original values
back bit for bit, as fp32) and `imported_from` (source path and SHA-256, key-map version, layout, and the model
overrides the weights need, which the command prints as the evaluate line to use).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmark.checkpoint import load_checkpoint
from benchmark.config import ModelConfig, load_config
from benchmark.errors import UserError
from benchmark.model import build_model
from benchmark.model.clip4vla import MAX_LOGIT_SCALE
from benchmark.model.keymap import keymap

CROSS_BLOCK = "cross.transformer.resblocks."
UNTRAINED_IF_LEFT_OUT = ("cross.", "cls.")  # built but never trained by the authors' pre-training


@dataclass
class Imported:
    """What `import_checkpoint` wrote, for the command's summary."""

    source: Path
    out: Path
    layout: str  # retrieval | pre-training | captioning
    overrides: list[str]  # the model the weights fit (with model.pretrained=null: every weight is in the file)
    tensors: int  # in the source
    dtypes: list[str]  # of the source's tensors
    left_out: list[str]  # what of the source has no place in this model: keys, and rows as `key[n:]`

    def summary(self) -> str:
        """What was read, what was left out, where it went, and the evaluate line that fits it."""
        return "\n".join([
            f"{self.source}: the authors' {self.layout} model, {self.tensors} tensors ({', '.join(self.dtypes)}; "
            f"fp32 here); left out ({len(self.left_out)}): {listed(self.left_out, 6)}",
            f"wrote {self.out}",
            f"score it with: clip4vla evaluate TASK --checkpoint {self.out} --out DIR {' '.join(self.overrides)}",
        ])


def listed(keys: list[str], first: int = 4) -> str:
    """'a, b, c, d (+3 more)': enough of a long key list for a one-line error."""
    more = f" (+{len(keys) - first} more)" if len(keys) > first else ""
    return ", ".join(keys[:first]) + more


def detect_layout(state: dict[str, torch.Tensor]) -> str:
    """retrieval, pre-training or captioning, from the keys (and whether the LM head was ever trained: a bias
    still all zero, its init, never saw a gradient)."""
    if "cls.predictions.bias" not in state:
        return "retrieval"
    return "pre-training" if not state["cls.predictions.bias"].any() else "captioning"


def model_overrides(state: dict[str, torch.Tensor], layout: str) -> list[str]:
    """The config of the model these weights fit, as dotted overrides."""
    cross_layers = len({k[len(CROSS_BLOCK):].split(".")[0] for k in state if k.startswith(CROSS_BLOCK)})
    if layout == "pre-training":  # no fusion module in pre-training (spec §2.5); its cross is left out
        needs = ["model.fusion=feat_avg"]
    elif layout == "retrieval":
        needs = [f"model.fusion={'loose_seq' if cross_layers else 'feat_avg'}"]
    else:
        needs = ["model.decoder=true"]
    if cross_layers and layout != "pre-training":
        needs.append(f"model.cross_layers={cross_layers}")
    if "audio.visual.control_embedding" not in state:  # `--with_control_token -1` (spec §2.3)
        needs.append("model.type_token=off")
    return needs


def read_original(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in `path`: a torch file of tensors only (one-line errors otherwise)."""
    state = load_checkpoint(path)
    odd = [f"{k} ({type(v).__name__})" for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd:
        raise UserError(f"{path} is not a CLIP4VLA state dict of tensors: {listed(odd)}")
    return state


def check_fit(path: Path, project: dict[str, torch.Tensor], cfg: ModelConfig, layout: str) -> None:
    """The converted tensors are exactly the state dict of the model `cfg` builds (one-line errors naming keys
    as the source names them)."""
    names = keymap().original_key
    expected = {k: v.shape for k, v in build_model(cfg).state_dict().items()}
    model = f"the {layout} model of {cfg.clip_name}"
    missing = sorted(names(k) for k in expected.keys() - project.keys())
    if missing:
        raise UserError(f"{path} lacks keys of {model} ({len(missing)}): {listed(missing)}")
    surplus = sorted(names(k) for k in project.keys() - expected.keys())
    if surplus:
        raise UserError(f"{path} has keys that {model} has not ({len(surplus)}): {listed(surplus)} "
                        "(another model.clip_name?)")
    wrong = [f"{names(k)} {list(v.shape)} (model {list(expected[k])})"
             for k, v in project.items() if v.shape != expected[k]]
    if wrong:
        raise UserError(f"{path} has tensors of other shapes than {model} ({len(wrong)}): {listed(wrong, 3)}")


def sha256(path: Path) -> str:
    """Of the file's bytes, read 16 MiB at a time (a released checkpoint is about 0.5 GB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def save(state: dict, out: Path) -> None:
    """torch.save through a temporary file and a rename: a failed write never leaves a half file as FILE."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        torch.save(state, tmp)
    except (OSError, RuntimeError) as exc:  # torch's zip writer reports a full disk as a RuntimeError
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write {out}: {' '.join(str(exc).split())[:160]}") from None
    os.replace(tmp, out)


def check_imported(imported_from: dict, model: ModelConfig, where: Path) -> None:
    """An imported checkpoint scores as the authors' model only with the model config its weights need (its
    `overrides`): under another (the type token switched on for a file without one, `loose_seq` for a
    `feat_avg` file) the modules the file lacks would keep their random init and every number would be wrong.
    A one-line error naming what to set; model.pretrained does not matter (every weight is in the file)."""
    needed = load_config({}, [o for o in imported_from["overrides"] if not o.startswith("model.pretrained=")]).model
    wrong = [f"model.{f}={getattr(needed, f)} (this run: {getattr(model, f)})"
             for f in ("clip_name", "fusion", "cross_layers", "decoder", "type_token")
             if getattr(needed, f) != getattr(model, f) and (f != "cross_layers" or needed.fusion == "loose_seq"
                                                              or needed.decoder)]
    if wrong:
        layout = imported_from.get("layout", "original")
        raise UserError(f"{where} holds the authors' {layout} model, which needs {', '.join(wrong)}: run with "
                        f"{' '.join(imported_from['overrides'])}")


def import_checkpoint(source: Path, out: Path, overrides: Sequence[str] = ()) -> Imported:
    """Convert `source` (an original CLIP4VLA state dict) into this suite's checkpoint at `out`; `overrides`
    name the CLIP configuration (model.clip_name, default ViT-B-32-quickgelu, as the authors' ViT-B/32)."""
    source, out = Path(source).resolve(), Path(out).resolve()
    if out == source or out.is_dir():
        raise UserError(f"--out {out} must be a new file name, not {'the source' if out == source else 'a folder'}")
    state = read_original(source)
    unknown = keymap().unknown(state)
    if unknown:
        raise UserError(f"{source} has keys the CLIP4VLA key map does not know ({len(unknown)}): "
                        f"{listed(sorted(unknown))}")
    layout = detect_layout(state)
    needs = model_overrides(state, layout)
    needed_keys = {n.split("=")[0] for n in needs}
    clash = [o for o in overrides if o.split("=")[0] in needed_keys and o not in needs]
    if clash:
        raise UserError(f"{source} holds a {layout} model that needs {', '.join(needs)}: drop {', '.join(clash)}")
    cfg = load_config({}, [*overrides, "model.pretrained=null", *needs]).model
    tied = {r.original for r in keymap().rules if r.kind == "tied"}  # stays: its tie is checked, then rebuilt
    left_out = {k: v.float() for k, v in state.items()
                if layout == "pre-training" and k.startswith(UNTRAINED_IF_LEFT_OUT) and k not in tied}
    try:
        converted = keymap().to_project({k: v for k, v in state.items() if k not in left_out},
                                        type_token="audio.visual.control_embedding" in state)
    except UserError as exc:
        raise UserError(f"{source}: {exc}") from None
    project = {**converted.project, "logit_scale": torch.tensor(math.log(MAX_LOGIT_SCALE))}  # fixed 100, spec §2.4
    check_fit(source, project, cfg, layout)
    overrides = [f"model.clip_name={cfg.clip_name}", "model.pretrained=null", *needs]
    dtypes = sorted({str(v.dtype).removeprefix("torch.") for v in state.values()})
    no_place = {**converted.no_home, **left_out}
    save({"model": project, "dropped_rows": converted.dropped_rows, "left_out": no_place,
          "imported_from": {"source": str(source), "sha256": sha256(source), "keymap_sha256": keymap().sha256,
                            "layout": layout, "overrides": overrides, "source_dtypes": dtypes}}, out)
    rows = [f"{k}[{keymap().by_original[k].rows}:]" for k in converted.dropped_rows]  # none hold a layer index
    return Imported(source, out, layout, overrides, len(state), dtypes, rows + sorted(no_place))
