"""``utils.graphs``: direct-edge splices, edge ablation, the graph structure and its exports."""
from __future__ import annotations

import pytest
import torch

from solutions.ch01_attribution import logit_diff
from solutions.ch03_feature_circuits import edge_effects
from utils.backends import load_backend
from utils.circuits import NodeBaseline, dictionary_values
from utils.graphs import (
    Graph,
    Tracer,
    attribution_figure,
    direct_change,
    graph_figure,
    group_nodes,
    is_supernode,
    node_card,
    node_gradients,
    splice_for_edges,
    to_dot,
    to_svg,
)
from utils.graphs.pruning import prune
from utils.nodes import Node
from utils.views import sig3


@pytest.fixture(scope="module")
def bk():
    return load_backend("toy")


def test_splice_for_edges_keeps_the_model_and_exposes_direct_paths(bk) -> None:
    model, tokens = bk.model, bk.world.task_batch("ioi", 2, seed=0).tokens
    every = list(bk.dictionaries.values())
    up, down = bk.dictionary("resid_sae", 0), bk.dictionary("resid_sae", 1)
    with torch.no_grad():
        clean = model(tokens)
    with splice_for_edges(model, every, up, down) as nodes, torch.enable_grad():
        logits = model(tokens)
        torch.testing.assert_close(logits, clean, atol=1e-4, rtol=1e-4)
        # resid0 -> resid1 is the skip path alone: the error's Jacobian is the identity
        grad = torch.autograd.grad(nodes["down.error"][:, -1].sum() + nodes["down.latents"][:, -1].sum(), nodes["up.error"])[0]
    assert grad[:, :-1].abs().max() == 0  # attention and MLP of layer 1 are held fixed: no other position matters
    assert not model.hook_dict["blocks.1.hook_resid_post"].fwd_hooks  # hooks removed on exit


def test_edge_attribution_matches_ablation_for_a_small_step(bk) -> None:
    """Ablating to a value close to the clean one, edge ablation times the downstream gradient
    is the vector-Jacobian estimate (one prompt, so a baseline can hold its own values)."""
    model, batch = bk.model, bk.world.task_batch("ioi", 1, seed=1)
    every = list(bk.dictionaries.values())
    up, down = bk.dictionary("transcoder", 1), bk.dictionary("resid_sae", 1)
    values = dictionary_values(model, every, batch.tokens)
    up_acts, up_error = values[up.cfg.metadata.hook_name]
    latent = int(up_acts[0, -1].argmax())
    near = up_acts[0].clone()
    near[-1, latent] *= 0.99
    baseline = NodeBaseline({h: v[0][0] for h, v in values.items()}, {h: v[1][0] for h, v in values.items()})
    baseline.latents[up.cfg.metadata.hook_name] = near
    d_latents, _ = direct_change(model, every, up, down, batch.tokens, Node("transcoder", 1, -1, latent), near[-1, latent])
    target = int(d_latents[0, -1].abs().argmax())
    assert d_latents[0, -1, target].abs() > 0
    metric = lambda logits: logit_diff(logits, batch.answer_ids, batch.distractor_ids)  # noqa: E731
    grads = node_gradients(model, every, batch.tokens, metric)
    truth = grads[f"{down.cfg.metadata.hook_name}.latents"].grad[0, -1, target] * d_latents[0, -1, target]
    edges = edge_effects(model, every, up, down, batch.tokens, metric, [Node("resid_sae", 1, -1, target)], baseline)
    assert edges.shape == (1, batch.tokens.shape[1], up.cfg.d_sae + 1)
    torch.testing.assert_close(edges[0, -1, latent], truth, rtol=0.02, atol=1e-6)
    others = torch.cat([edges[0, :-1].flatten(), edges[0, -1, :latent], edges[0, -1, latent + 1:]])
    assert others.abs().max() < 1e-3 * edges[0, -1, latent].abs()  # only the changed node has an edge (up to float noise)


def test_graph_threshold_exports_and_tracing() -> None:
    a, b, c = Node("resid_sae", 0, 1, 3), Node("attn_sae", 1, 2, "error"), Node("resid_sae", 1, 2, 7)
    graph = Graph.from_edges({a: 0.5, b: -0.2, c: 0.05}, {(a, b): 0.3, (b, c): -0.01, (a, c): 0.02}, labels={a: "name"})
    kept = graph.thresholded(0.1, 0.05)
    assert kept.nodes == [a, b] and dict(kept.edges) == {(a, b): 0.3} and kept.labels == {a: "name"}
    assert dict(graph.effects) == {a: 0.5, b: -0.2, c: 0.05} and graph.adjacency[graph.index(b), graph.index(a)] == 0.3
    dot = to_dot(graph, "test")
    assert dot.count(" -> ") == 3 and '"resid_sae0@1:3"' in dot and "style=dashed" in dot
    svg = to_svg(graph, "test")
    assert svg.count("<circle") == 3 and svg.count("<line") == 3
    figure = graph_figure(graph, "test")
    drawn = next(t for t in figure.data if t.name == "nodes")
    assert len(set(zip(drawn.x, drawn.y))) == 3 and list(drawn.marker.color) == [0.5, -0.2, 0.05]  # by effect, in node order

    def edges_shown(visible: list[bool]) -> int:
        return sum(sum(x is not None for x in t.x) // 2 for t, v in zip(figure.data, visible) if t.name.startswith("edges") and v)

    steps = figure.layout.sliders[0].steps  # the slider: every edge, then only the strongest
    assert edges_shown(steps[0].args[0]["visible"]) == 3 and edges_shown(steps[-1].args[0]["visible"]) == 1
    tracer = Tracer(lambda node: {c: 1.0} if node == a else {}, [a])
    assert tracer.step() == 1 and tracer.step() == 0 and set(tracer.graph.nodes) == {a, c}


def test_graph_view_gives_every_node_a_place_and_colours_by_kind_without_effects() -> None:
    """30 latents in one (position, layer) cell: 30 places inside the position's column; all
    effects 0 (a cognition graph): nodes coloured by kind, no colour bar, numbers on the
    nodes with the most edge weight."""
    cell = [Node("resid_sae", 0, 4, i) for i in range(30)]
    other = Node("attn_sae", 1, 5, 0)
    graph = Graph.from_edges({**{n: 0.0 for n in cell}, other: 0.0}, {(cell[7], other): 1.0, (cell[3], other): 0.5})
    figure = graph_figure(graph, "cell", tokens=[str(p) for p in range(6)])
    drawn = next(t for t in figure.data if t.name == "nodes")
    places = list(zip(drawn.x, drawn.y))
    assert len(set(places)) == 31
    xs = [x for (x, _), n in zip(places, sorted(graph.nodes)) if n in cell]
    column = figure.layout.xaxis.range[1] / 2  # two positions: each gets half the plot's width
    assert max(xs) - min(xs) < column
    assert drawn.marker.colorbar.title.text is None and len(set(drawn.marker.color)) == 2
    numbered = {n: t for n, t in zip(sorted(graph.nodes), drawn.text) if t}
    assert numbered[other] == "1" and numbered[cell[7]] == "2" and numbered[cell[3]] == "3"


def small_attribution_graph() -> tuple[Graph, list[Node]]:
    """embed -> two layer-0 latents -> a layer-1 latent and an error -> two logits, with a
    skip edge embed -> logit and an edge between the two layer-0 latents' targets."""
    e = Node("embed", 0, 0, 5)
    a, b = Node("transcoder", 0, 1, 3), Node("transcoder", 0, 1, 7)
    c, err = Node("transcoder", 1, 1, 2), Node("transcoder", 1, 1, "error")
    l1, l2 = Node("logit", 2, 1, 10), Node("logit", 2, 1, 11)
    edges = {(e, a): 1.0, (e, b): 0.5, (a, b): 0.25, (a, c): 2.0, (b, c): -0.75, (a, l1): 0.5, (b, l1): 1.5,
             (c, l1): 3.0, (err, l1): -1.0, (c, l2): 0.2, (e, l2): 0.1}
    graph = Graph.from_edges({n: 0.0 for n in (e, a, b, c, err, l1, l2)}, edges, labels={a: "city", c: "country"})
    graph.activation = torch.tensor([0.0, 1.5, 2.5, 4.0, 0.0, 0.9, 0.1], dtype=torch.float64)
    return graph, [e, a, b, c, err, l1, l2]


def test_group_nodes_sums_edges_and_activations_exactly() -> None:
    graph, (e, a, b, c, err, l1, l2) = small_attribution_graph()
    grouped = group_nodes(graph, {"layer 0": [a, b]})
    (s,) = [n for n in grouped.nodes if is_supernode(n)]
    assert a not in grouped.nodes and b not in grouped.nodes and len(grouped.nodes) == len(graph.nodes) - 1
    assert s == Node("transcoder", 0, 1, -1)  # at its latest member, index -1
    edges = dict(grouped.edges)
    assert edges[(e, s)] == 1.5 and edges[(s, c)] == 1.25 and edges[(s, l1)] == 2.0  # member edges summed
    assert (s, s) not in edges  # a -> b is internal to the group
    assert edges[(c, l1)] == 3.0 and edges[(e, l2)] == 0.1  # edges of ungrouped nodes untouched
    into = lambda g, t: float(g.adjacency[g.index(t)].sum())  # noqa: E731
    for logit in (l1, l2):
        assert into(grouped, logit) == into(graph, logit)  # total weight into each logit conserved
    assert float(grouped.adjacency[grouped.mask("logit")].sum()) == pytest.approx(float(graph.adjacency[graph.mask("logit")].sum()), abs=1e-12)
    assert float(grouped.activation[grouped.index(s)]) == 4.0 and float(grouped.activation.sum()) == float(graph.activation.sum())
    assert grouped.labels[s] == "supernode layer 0 (2 members)" and str(a) in grouped.hover[s] and str(b) in grouped.hover[s]
    assert grouped.labels[c] == "country" and a not in grouped.labels


def test_group_nodes_groups_across_layers_and_keeps_each_group_apart() -> None:
    graph, (e, a, b, c, err, l1, l2) = small_attribution_graph()
    grouped = group_nodes(graph, {"path": [a, c], "rest": [b, err]})
    s1, s2 = Node("transcoder", 1, 1, -1), Node("transcoder", 1, 1, -2)  # both end at layer 1
    assert [n for n in grouped.nodes if is_supernode(n)] == sorted([s1, s2])
    edges = dict(grouped.edges)
    assert edges[(s1, l1)] == 3.5 and edges[(s2, l1)] == 0.5 and edges[(s2, s1)] == -0.75 and edges[(s1, s2)] == 0.25
    assert edges[(e, s1)] == 1.0 and edges[(e, s2)] == 0.5


def test_group_nodes_refuses_bad_groups_with_a_clear_message() -> None:
    graph, (e, a, b, c, err, l1, l2) = small_attribution_graph()
    with pytest.raises(ValueError, match=r"transcoder0@1:3 is in two groups, 'x' and 'y'"):
        group_nodes(graph, {"x": [a, b], "y": [a, c]})
    stranger = Node("transcoder", 1, 0, 99)
    with pytest.raises(ValueError, match=r"group 'x': transcoder1@0:99 is not a node of this graph"):
        group_nodes(graph, {"x": [a, stranger]})
    with pytest.raises(ValueError, match="group 'x' has no members"):
        group_nodes(graph, {"x": []})


def test_attribution_figure_redraws_the_pruned_graph_with_supernodes() -> None:
    graph, (e, a, b, c, err, l1, l2) = small_attribution_graph()
    graph.tokens = ["<bos>", "Paris"]
    pruned = prune(graph, 1.0, 1.0)  # keeps everything that reaches a logit
    assert bool(pruned.nodes.all())
    plain = attribution_figure(graph, pruned, {}, "plain", cards={a: "top contexts:<br>x <b>y</b><br>top logits: z"})
    drawn = next(t for t in plain.data if t.name == "nodes")
    assert len(drawn.x) == 7 and any("top contexts" in t and "top logits: z" in t for t in drawn.customdata)
    note = next(n for n in plain.layout.annotations if n.clicktoshow and "tc0.3@1" in n.text)
    assert "top contexts" in note.text and "top logits: z" in note.text  # the click note shows the card
    figure = attribution_figure(graph, pruned, {}, "grouped", groups={"layer 0": [a, b]})
    drawn = next(t for t in figure.data if t.name == "nodes")
    assert len(drawn.x) == 6 and figure.layout.meta["nodes"] == 6
    (text,) = [t for t in drawn.customdata if "tc0.S1@1" in t]
    influence = {n: float(v) for n, v in zip(graph.nodes, pruned.node_influence)}
    assert "supernode layer 0 (2 members)" in text and f"influence {sig3(influence[a] + influence[b])}" in text
    assert "activation 4 (sum)" in text and str(a) in text and str(b) in text


def test_node_card_reads_contexts_and_logits_from_the_explanation_table(bk) -> None:
    latent = Node("transcoder", 1, 3, 0)
    row = bk.explanations.lookup("transcoder.1", 0)
    card = node_card(bk, latent)
    lines = card.split("<br>")
    assert lines[0] == "top contexts:" and lines[-1] == "top logits: " + ", ".join(row["top_tokens"][:5])
    assert len(lines) == 2 + min(3, len(row["top_contexts"])) and all("<b>" in line for line in lines[1:-1])
    assert node_card(bk, Node("transcoder", 0, 2, "error")).startswith("error node")
    assert node_card(bk, Node("embed", 0, 2, 5)).startswith("embedding node") and node_card(bk, Node("logit", 2, 2, 5)).startswith("logit node")
