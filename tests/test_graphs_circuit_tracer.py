"""The course's graph in circuit-tracer's viewer schema (``utils.graphs.circuit_tracer``) and the pieces of
``benchmarks.circuit_tracer`` that run in the course's own venv (no circuit-tracer needed)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from benchmarks.circuit_tracer.export import Prompt, export
from benchmarks.circuit_tracer.runner import fold_ln2_into_mlp, hook_normalized_after_affine
from benchmarks.circuit_tracer.side_by_side import compare, course_graph, node_key
from utils.backends import load_backend
from utils.graphs.circuit_tracer import cantor_pair, cumulative_influence, viewer_json, write_viewer_graph
from utils.graphs import influence, normalized_adjacency, prune, salient_logit_ids
from utils.nodes import Node

METADATA = {"slug": str, "scan": str, "transcoder_list": list, "prompt_tokens": list, "prompt": str,
            "node_threshold": float, "schema_version": int}
QPARAMS = {"pinnedIds": list, "supernodes": list, "linkType": str, "clickedId": str, "sg_pos": str}
NODE = {"node_id": str, "jsNodeId": str, "feature": int, "layer": str, "ctx_idx": int, "feature_type": str,
        "clerp": str, "influence": float, "token_prob": float, "is_target_logit": bool}
TYPES = {"embed": "embedding", "transcoder": "cross layer transcoder", "error": "mlp reconstruction error", "logit": "logit"}


@pytest.fixture(scope="module")
def toy():
    bk = load_backend("toy")
    tcs = [bk.dictionary("transcoder", layer) for layer in range(bk.model.cfg.n_layers)]
    tokens = bk.world.task_batch("facts", 1, seed=0).tokens
    with torch.no_grad():
        ids = salient_logit_ids(bk.model(tokens)[0, -1])[0]
    graph = course_graph(bk.model, tcs, tokens, ids, batch=64)
    return bk, tcs, tokens, ids, graph, prune(graph)


@pytest.fixture(scope="module")
def exported(toy):
    bk, _, _, _, graph, pruned = toy
    latents = [n for n, k in zip(graph.nodes, pruned.nodes.tolist()) if k and n.kind == "transcoder" and not n.is_error]
    labels = {n: f"latent {n.index}" for n in latents}
    top = sorted(latents, key=lambda n: -float(pruned.node_influence[graph.index(n)]))
    data = viewer_json(graph, pruned, slug="fact", labels=labels, pinned=top[:3],
                       supernodes={"pair": top[3:5]}, tokenizer=bk.model.tokenizer)
    return data, labels


def test_schema_fields_and_types(exported):
    data, _ = exported
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    for fields, obj in ((METADATA, data["metadata"]), (QPARAMS, data["qParams"])):
        for name, kind in fields.items():
            assert isinstance(obj[name], kind), f"{name}: {obj.get(name)!r}"
    for node in data["nodes"]:
        for name, kind in NODE.items():
            assert isinstance(node[name], kind), f"{node['node_id']} {name}: {node.get(name)!r}"
    for link in data["links"]:
        assert set(link) == {"source", "target", "weight"} and isinstance(link["weight"], float)
    json.dumps(data, allow_nan=False)  # what the viewer reads is plain JSON


def test_ids_are_unique_and_links_point_at_nodes(exported):
    data, _ = exported
    ids = [n["node_id"] for n in data["nodes"]]
    assert len(ids) == len(set(ids))
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    q = data["qParams"]
    assert set(q["pinnedIds"]) <= set(ids) and q["clickedId"] in ids
    assert all(set(group[1:]) <= set(ids) for group in q["supernodes"])
    # The viewer keys a node's card by layer, feature and position: no two nodes may share one.
    keys = [(n["layer"], n["feature"], n["ctx_idx"]) for n in data["nodes"]]
    assert len(keys) == len(set(keys))


def test_nodes_and_links_are_the_pruned_graph(toy, exported):
    _, _, _, _, graph, pruned = toy
    data, labels = exported
    by_id = {str(n): j for j, n in enumerate(graph.nodes)}
    kept_edges = pruned.edges & (graph.adjacency != 0)
    assert len(data["links"]) == int(kept_edges.sum())
    for link in data["links"]:
        t, s = by_id[link["target"]], by_id[link["source"]]
        assert kept_edges[t, s] and link["weight"] == pytest.approx(float(graph.adjacency[t, s]), rel=1e-6)
    for node in data["nodes"]:
        j = by_id[node["node_id"]]
        n = graph.nodes[j]
        kind = "error" if n.kind == "transcoder" and n.is_error else n.kind
        assert pruned.nodes[j] and node["ctx_idx"] == n.pos and node["feature_type"] == TYPES[kind]
        layer = {"embed": "E", "logit": str(n.layer + 1)}.get(kind, str(n.layer))  # logits sit above the last layer
        assert node["layer"] == layer, (n, node["layer"])
        if kind == "transcoder":
            assert node["feature"] == cantor_pair(n.layer, int(n.index))
            assert node["clerp"] == labels[n] and node["activation"] == pytest.approx(float(graph.activation[j]))
    # Every prompt position keeps its embedding node, drawn under its token.
    assert data["metadata"]["prompt_tokens"] == graph.tokens
    assert sorted(n["ctx_idx"] for n in data["nodes"] if n["feature_type"] == "embedding") == list(range(len(graph.tokens)))


def test_logit_nodes_read_as_the_viewer_parses_them(toy, exported):
    bk, _, _, ids, graph, _ = toy
    data, _ = exported
    logits = [n for n in data["nodes"] if n["feature_type"] == "logit"]
    assert sorted(n["feature"] for n in logits) == sorted(ids.tolist())
    for node in logits:
        token = node["clerp"].split('"')[1]  # how the viewer reads a logit's token and probability
        prob = float(node["clerp"].split("(p=")[1].split(")")[0])
        assert token == bk.model.tokenizer.decode([node["feature"]])
        assert prob == pytest.approx(node["token_prob"], abs=5e-4)
        assert node["ctx_idx"] == len(graph.tokens) - 1 and node["layer"] == str(bk.model.cfg.n_layers + 1)
    assert [n["is_target_logit"] for n in logits].count(True) == 1
    top = max(logits, key=lambda n: n["token_prob"])
    assert top["is_target_logit"] and data["qParams"]["clickedId"] == top["node_id"]


def test_cumulative_influence_and_the_slider(toy, exported):
    _, _, _, _, graph, pruned = toy
    data, _ = exported
    scores = pruned.node_influence.double()
    expected = torch.tensor([float(scores[scores >= s].sum() / scores.sum()) for s in scores], dtype=torch.float64)
    got = cumulative_influence(scores)
    distinct = torch.tensor([int((scores == s).sum()) == 1 for s in scores])  # ties are broken by order
    assert torch.allclose(got[distinct], expected[distinct])
    assert got.max() <= 1 + 1e-12 and got.min() >= 0
    by_id = {str(n): j for j, n in enumerate(graph.nodes)}
    threshold = data["metadata"]["node_threshold"]
    for node in data["nodes"]:  # the viewer shows a node when its influence is at most the slider's value
        assert node["influence"] == pytest.approx(float(got[by_id[node["node_id"]]]))
        assert node["influence"] <= threshold
    assert threshold - max(n["influence"] for n in data["nodes"]) < 0.01


def test_unpruned_export_has_every_edge(toy):
    _, _, _, _, graph, _ = toy
    data = viewer_json(graph, slug="full", node_threshold=0.5)
    nonzero = graph.adjacency != 0
    assert len(data["links"]) == int(nonzero.sum()) and data["metadata"]["node_threshold"] == 0.5
    scores = influence(normalized_adjacency(graph.adjacency), graph.logit_weights)
    by_id = {str(n): j for j, n in enumerate(graph.nodes)}
    assert all(n["influence"] == pytest.approx(float(cumulative_influence(scores.double())[by_id[n["node_id"]]]))
               for n in data["nodes"])


def test_unknown_pinned_node_is_refused(toy):
    _, _, _, _, graph, pruned = toy
    with pytest.raises(ValueError, match="not a node of the exported graph"):
        viewer_json(graph, pruned, slug="x", pinned=[Node("transcoder", 0, 0, 10**6)])


def test_write_viewer_graph_lists_each_slug_once(toy, tmp_path):
    _, _, _, _, graph, pruned = toy
    first = viewer_json(graph, pruned, slug="a")
    path = write_viewer_graph(first, tmp_path)
    write_viewer_graph(viewer_json(graph, slug="b"), tmp_path)
    write_viewer_graph(first, tmp_path)
    assert path == tmp_path / "a.json" and json.loads(path.read_text()) == first
    listed = json.loads((tmp_path / "graph-metadata.json").read_text())["graphs"]
    assert sorted(g["slug"] for g in listed) == ["a", "b"]


def test_cantor_pairing_is_one_to_one():
    assert [cantor_pair(0, 0), cantor_pair(1, 0), cantor_pair(0, 1), cantor_pair(2, 3)] == [0, 1, 2, 18]
    values = {cantor_pair(x, y) for x in range(40) for y in range(40)}
    assert len(values) == 1600


# ---------------------------------------------------------------------------------------
# benchmarks.circuit_tracer, the parts that need no circuit-tracer.


def test_circuit_tracer_conventions_change_only_boundary_edges(toy):
    """With circuit-tracer's conventions, latents and errors at position 0 are gone (zero) and
    embedding edges read the token embedding alone; every other edge is unchanged, because
    the frozen replacement model's gradients do not depend on the leaves' values."""
    bk, tcs, tokens, ids, ours, _ = toy
    theirs = course_graph(bk.model, tcs, tokens, ids, batch=64, conventions="circuit-tracer")
    assert not any(n.pos == 0 and n.kind == "transcoder" and not n.is_error for n in theirs.nodes)
    assert set(theirs.nodes) <= set(ours.nodes)
    cols = [ours.index(n) for n in theirs.nodes]
    same = ours.adjacency[cols][:, cols]
    for j, n in enumerate(theirs.nodes):
        if n.kind == "embed" or (n.is_error and n.pos == 0):
            continue
        assert torch.equal(theirs.adjacency[:, j], same[:, j]), n
    assert all(theirs.adjacency[:, theirs.index(Node("transcoder", L, 0, "error"))].abs().max() == 0 for L in range(2))
    # An embedding edge is now (gradient . W_E[token]): compare with the course's (gradient . resid_pre).
    embed = theirs.index(Node("embed", 0, 3, int(tokens[0, 3])))
    assert not torch.allclose(theirs.adjacency[:, embed], same[:, embed])
    with pytest.raises(ValueError, match="conventions"):
        course_graph(bk.model, tcs, tokens, ids, conventions="circuit_tracer")


def test_compare_aligns_nodes_and_finds_differences(toy):
    _, _, _, _, graph, _ = toy
    keys = torch.tensor([node_key(n) for n in graph.nodes])
    order = torch.randperm(len(keys), generator=torch.Generator().manual_seed(0))
    inf = influence(normalized_adjacency(graph.adjacency), graph.logit_weights)
    theirs = {"nodes": keys[order], "adjacency": graph.adjacency[order][:, order].clone(), "influence": inf[order]}
    same = compare(graph, theirs)
    assert same["same_nodes"] and same["max_edge_difference"] == 0 and same["influence_spearman"] == pytest.approx(1)
    t, s = (graph.adjacency != 0).nonzero()[5].tolist()
    theirs["adjacency"][(order == t).nonzero().item(), (order == s).nonzero().item()] += graph.adjacency.abs().max() * 1e-3
    assert compare(graph, theirs)["max_edge_difference"] == pytest.approx(1e-3, rel=1e-3)
    theirs["nodes"] = theirs["nodes"].clone()
    theirs["nodes"][0, 3] += 10**6
    assert not compare(graph, theirs)["same_nodes"]


def test_export_writes_what_circuit_tracer_loads(toy, tmp_path):
    bk, tcs, tokens, ids, _, _ = toy
    folder = export(tmp_path, bk.model, tcs, [Prompt("facts", tokens, ids)], scan="toy")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["prompts"][0]["tokens"] == tokens[0].tolist() and manifest["format"] == "plt"
    for layer, tc in enumerate(tcs):
        saved = load_file(folder / manifest["transcoders"][str(layer)])
        assert torch.equal(saved["W_enc"], tc.W_enc.T) and torch.equal(saved["W_dec"], tc.W_dec)
        assert torch.equal(saved["b_enc"], tc.b_enc) and torch.equal(saved["b_dec"], tc.b_dec)
    weights = load_file(folder / "model" / "model.safetensors")
    assert set(weights) == {name for name, _ in bk.model.named_parameters()}
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    text = " ".join(bk.model.to_str_tokens(tokens[0])[1:])
    assert tokenizer(text, add_special_tokens=False).input_ids == tokens[0, 1:].tolist()
    assert tokenizer.bos_token_id == int(tokens[0, 0])
    with torch.no_grad():
        assert torch.equal(load_file(folder / "reference.safetensors")["logits.facts"], bk.model(tokens)[0, -1])


def test_export_writes_a_clt_in_circuit_tracers_layout(toy, tmp_path):
    """A cross-layer transcoder goes out as ``"format": "clt"``, in the files circuit-tracer's
    ``load_clt`` reads (``W_enc_{L}`` transposed, ``W_dec_{L}`` one row per target layer)."""
    bk, _, tokens, ids, _, _ = toy
    folder = export(tmp_path, bk.model, bk.clt, [Prompt("facts", tokens, ids)], scan="toy-clt")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "clt" and "transcoders" not in manifest
    for layer in range(bk.clt.cfg.n_layers):
        enc = load_file(folder / manifest["clt"] / f"W_enc_{layer}.safetensors")
        dec = load_file(folder / manifest["clt"] / f"W_dec_{layer}.safetensors")[f"W_dec_{layer}"]
        assert torch.equal(enc[f"W_enc_{layer}"], bk.clt.W_enc[layer].T)
        assert torch.equal(enc[f"threshold_{layer}"], bk.clt.threshold[layer])
        assert dec.shape == (bk.clt.cfg.d_sae, bk.clt.cfg.n_layers - layer, bk.model.cfg.d_model)
        for t in range(layer, bk.clt.cfg.n_layers):
            assert torch.equal(dec[:, t - layer], bk.clt.decoder(layer, t))


def test_clt_nodes_align_with_circuit_tracers(toy):
    """A CLT latent or error node maps to circuit-tracer's kind like a transcoder's does."""
    assert node_key(Node("clt", 1, 4, 17)) == node_key(Node("transcoder", 1, 4, 17))
    assert node_key(Node("clt", 0, 2, "error")) == node_key(Node("transcoder", 0, 2, "error"))


def test_folding_ln2_into_the_mlp_keeps_the_model(toy):
    """The runner's fold, for a TransformerLens that reads ``ln2.hook_normalized`` after the
    scale and bias: the folded model computes the same logits, and its ``ln2`` is plain."""
    bk, _, tokens, _, _, _ = toy
    state = {k: v.clone() for k, v in bk.model.state_dict().items()}
    fold_ln2_into_mlp(state, bk.model.cfg.n_layers)
    folded = load_backend("toy", fresh=True).model
    folded.load_state_dict(state)
    with torch.no_grad():
        assert torch.allclose(folded(tokens), bk.model(tokens), atol=1e-5)
    assert torch.equal(state["blocks.1.ln2.w"], torch.ones(bk.model.cfg.d_model))
    assert not torch.equal(state["blocks.1.mlp.W_in"], bk.model.state_dict()["blocks.1.mlp.W_in"])


def test_course_transformer_lens_reads_hook_normalized_before_the_affine_map():
    """The course's transcoders read ``ln2.hook_normalized`` before ``ln2``'s scale and bias
    (TransformerLens 3.x); the runner's probe must say so here."""
    assert hook_normalized_after_affine() is False
