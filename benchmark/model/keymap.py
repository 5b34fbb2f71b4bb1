"""The authors' CLIP4VLA state dict (`modules.modeling.AudioClip`) <-> this suite's CLIP4VLA.

`original_keymap.tsv` is a copy of the map established by running both models with weights copied through it:
every retrieval feature equal to about 1e-6 relative (spec §16). It lists ViT-B/32's keys; a row whose key holds
a layer index (`resblocks.3.`) applies to that layer of a tower of any depth. Transforms besides `copy`:
- the token embedding and the LM-head bias keep rows [0, 49408): the authors' added MASK/UNK/PAD rows 49408-49410
  have no place here (this suite pads with open_clip's 0, spec §14) and travel beside the model as dropped rows;
- the audio tower's positional table holds the type token's row last (spec §2.3): split into the tower's table
  and `audio.type_position` (without a type token, `--with_control_token -1`, it is the image tower's: a copy);
- `cls.predictions.decoder.weight` is the token embedding (tied, spec §2.7): never stored here, rebuilt from it;
- `similarity_dense.*`, the authors' `tight_seq` head (spec §2.5), has no home.
The inverse map gives back every original tensor's values bit for bit (as fp32), given the dropped rows and the
homeless tensors.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from benchmark.errors import UserError

KEYMAP_TSV = Path(__file__).with_name("original_keymap.tsv")
LAYER = re.compile(r"\.(\d+)\.")  # the one layer index a key may hold
KEEP_ROWS = re.compile(r"(?:rows|entries) \[0, (\d+)\)")


@dataclass(frozen=True)
class Rule:
    """One row of the map, its layer index (if any) written `{}`."""

    original: str
    project: tuple[str, ...]  # () when the tensor has no home here
    kind: str  # copy | keep_rows | split | tied | no_home
    rows: int = 0  # keep_rows: the leading rows this suite keeps
    tied_to: str = ""  # tied: the original key whose tensor it is


@dataclass
class Converted:
    """An original state dict in this suite's keys, with what has no place in this model."""

    project: dict[str, torch.Tensor]  # fp32
    dropped_rows: dict[str, torch.Tensor]  # original key -> its rows past this suite's vocabulary
    no_home: dict[str, torch.Tensor]  # original key -> tensor


def layer_pattern(key: str) -> tuple[str, str]:
    """'a.resblocks.3.b' -> ('a.resblocks.{}.b', '3'); a key without a layer index -> (key, '')."""
    found = LAYER.search(key)
    if found is None:
        return key, ""
    return f"{key[:found.start()]}.{{}}.{key[found.end():]}", found.group(1)


def _rule(original: str, project: str, transform: str) -> Rule:
    targets = () if project == "-" else tuple(layer_pattern(p)[0] for p in project.split(","))
    pattern = layer_pattern(original)[0]
    if transform == "copy":
        return Rule(pattern, targets, "copy")
    if keep := KEEP_ROWS.match(transform):
        return Rule(pattern, targets, "keep_rows", rows=int(keep.group(1)))
    if transform.startswith("split rows"):
        return Rule(pattern, targets, "split")
    if transform.startswith("tied to "):
        return Rule(pattern, targets, "tied", tied_to=transform.split()[2])
    if transform.startswith("no home"):
        return Rule(pattern, targets, "no_home")
    raise ValueError(f"{KEYMAP_TSV.name}: unknown transform '{transform}' for {original}")


class KeyMap:
    """The map's rules, looked up by original or by project key (layer indices generalised)."""

    def __init__(self, rules: list[Rule], sha256: str) -> None:
        self.rules = rules
        self.sha256 = sha256  # the map's version, recorded with every import
        self.by_original = {r.original: r for r in rules}
        self.by_project = {p: r for r in rules for p in r.project}

    @classmethod
    def read(cls, path: Path = KEYMAP_TSV) -> KeyMap:
        """The rules of a key-map TSV; its SHA-256 is the map's version."""
        rules: dict[str, Rule] = {}
        for line in path.read_text().splitlines()[1:]:  # after the header: original, project, transform
            rule = _rule(*line.split("\t"))
            rules[rule.original] = rule  # the rows of one layer pattern give one rule
        return cls(list(rules.values()), hashlib.sha256(path.read_bytes()).hexdigest())

    def unknown(self, keys) -> list[str]:
        """The original keys the map has no rule for."""
        return [k for k in keys if layer_pattern(k)[0] not in self.by_original]

    def original_key(self, project_key: str) -> str:
        """The original key a project key comes from (the key itself where the map has none)."""
        pattern, index = layer_pattern(project_key)
        rule = self.by_project.get(pattern)
        return rule.original.replace("{}", index) if rule else project_key

    def to_project(self, state: dict[str, torch.Tensor], type_token: bool) -> Converted:
        """Original tensors -> this suite's keys, floating point as fp32 (the released weights are fp16, spec §2.9);
        `type_token`: the audio tower has one (its positional table then ends with the type token's row). Every
        key must have a rule (see `unknown`)."""
        out = Converted({}, {}, {})
        for key, tensor in state.items():
            pattern, index = layer_pattern(key)
            rule = self.by_original[pattern]
            tensor = tensor.float() if tensor.is_floating_point() else tensor
            targets = [p.replace("{}", index) for p in rule.project]
            if rule.kind == "copy":
                out.project[targets[0]] = tensor
            elif rule.kind == "keep_rows":
                out.project[targets[0]] = tensor[: rule.rows].clone()
                out.dropped_rows[key] = tensor[rule.rows :].clone()
            elif rule.kind == "split" and type_token:
                out.project[targets[0]], out.project[targets[1]] = tensor[:-1].clone(), tensor[-1].clone()
            elif rule.kind == "split":
                out.project[targets[0]] = tensor
            elif rule.kind == "tied":
                if rule.tied_to in state and not torch.equal(state[rule.tied_to], state[key]):
                    raise UserError(f"{key} differs from {rule.tied_to}, which the authors' LM head ties it to")
            else:  # no_home
                out.no_home[key] = tensor
        return out

    def to_original(self, project: dict[str, torch.Tensor], dropped_rows: dict[str, torch.Tensor],
                    no_home: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of `to_project`: this suite's tensors (keys the map lacks, such as CLIP4VLA's own
        similarity scale, left out) and what had no place here -> the original state dict (dtypes as given)."""
        out = dict(no_home)
        for key, tensor in project.items():
            pattern, index = layer_pattern(key)
            rule = self.by_project.get(pattern)
            if rule is None:
                continue
            original = rule.original.replace("{}", index)
            if rule.kind == "keep_rows":
                out[original] = torch.cat([tensor, dropped_rows[original]])
            elif rule.kind == "split" and pattern == rule.project[0]:  # the tower's table, then the type row
                position = project.get(rule.project[1].replace("{}", index))
                out[original] = tensor if position is None else torch.cat([tensor, position[None]])
            elif rule.kind == "copy":
                out[original] = tensor
        for rule in self.rules:  # a tied weight exists wherever its head does
            head = rule.original.split(".")[0] + "."
            if rule.kind == "tied" and rule.tied_to in out and any(k.startswith(head) for k in out):
                out[rule.original] = out[rule.tied_to]
        return out


@cache
def keymap() -> KeyMap:
    """The shipped map, read once."""
    return KeyMap.read()
