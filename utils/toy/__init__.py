"""The model organism: a tiny transformer trained on a synthetic language with planted
circuits, plus the SAEs, attention SAEs and transcoders trained on it (DESIGN §5).

>>> from utils.toy import load
>>> bk = load()                                   # doctest: +SKIP
>>> bk.model.to_str_tokens("the eiffel is in the city of")  # doctest: +SKIP

``python -m utils.toy build`` retrains every artifact from seeds; ``python -m utils.toy
report`` prints the figures of merit as JSON. The grammar and label set are documented in
``utils.toy.generator`` and ``utils/toy/README.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from utils.backends.base import Backend
    from utils.toy.generator import World

ARTIFACTS = Path(__file__).parent / "artifacts"  # tokenizer/, model/, <kind>/<name>/, *.json
TOKENIZER, MODEL, EXPLANATIONS, REPORT = "tokenizer", "model", "explanations.json", "report.json"
CLT = "clt"  # artifacts/clt/<name>/: the cross-layer transcoder and its same-layer control


def clt_folder(root: Path, name: str) -> Path:
    return root / CLT / name


def load_clts(root: Path = ARTIFACTS, device: str = "cpu") -> dict:
    """The saved cross-layer transcoders by name (``utils.toy.training.CLT_NAMES``):
    ``cross_layer`` (the CLT, ``bk.clt``) and ``same_layer`` (the same training without
    cross-layer decoders, a control for comparisons)."""
    from utils.clt import CrossLayerTranscoder
    from utils.toy.training import CLT_NAMES

    return {name: CrossLayerTranscoder.load(clt_folder(root, name), device) for name in CLT_NAMES}


def load(device: str = "cpu", root: Path = ARTIFACTS, with_clt: bool = True, name: str = "toy",
         world: World | None = None) -> Backend:
    """The committed model organism as a ``utils.backends.Backend`` (offline, seconds);
    ``bk.clt`` is its cross-layer transcoder (None if not built, or not ``with_clt``).
    ``root``, ``name`` and ``world`` (default ``World()``) load another organism of the same
    kind saved the same way (``utils.hunt``)."""
    from utils.backends.base import Backend
    from utils.toy.dictionaries import dictionary_specs, load_dictionary
    from utils.toy.explanations import ExplanationTable
    from utils.toy.generator import World
    from utils.toy.model import load_model
    from utils.toy.tokenizer import load_tokenizer

    world = world or World()
    tokenizer = load_tokenizer(root / TOKENIZER)
    assert tokenizer.get_vocab() == world.word_to_id, "tokenizer and generator disagree"
    model = load_model(root / MODEL, tokenizer, device=device)
    specs = dictionary_specs(model.cfg.n_layers, model.cfg.d_model, model.cfg.n_heads,
                             model.cfg.d_head)
    loaded = {spec.name: load_dictionary(root, spec, device) for spec in specs}
    return Backend(
        name=name,
        model=model,
        saes={s.hook: loaded[s.name] for s in specs if s.kind == "resid_sae"},
        attn_saes={s.hook: loaded[s.name] for s in specs if s.kind == "attn_sae"},
        transcoders={s.hook: loaded[s.name] for s in specs if s.kind == "transcoder"},
        world=world,
        explanations=ExplanationTable.load(root / EXPLANATIONS),
        clt=_load_clt(root, device) if with_clt else None,
    )


def _load_clt(root: Path, device: str):
    from utils.clt import CrossLayerTranscoder

    folder = clt_folder(root, "cross_layer")
    return CrossLayerTranscoder.load(folder, device) if folder.exists() else None
