"""Chapter 05's attribution graphs beside circuit-tracer's (PyPI ``circuit-tracer`` 0.5.0).

``venv``          circuit-tracer's own virtual environment (it cannot share the course's)
``export``        the course's model, tokenizer and transcoders in a form circuit-tracer loads
``runner``        builds and times circuit-tracer's graphs; runs inside that venv
``side_by_side``  the course's graphs, the comparison and the printed lines
                  (``python -m utils.course bench attribution_graphs --against circuit-tracer``)
``viewer``        opens a course graph in circuit-tracer's own viewer

What circuit-tracer does, read from its source (its TransformerLens backend):

* **Replacement model.** Each block's MLP is wrapped; the MLP output hook returns
  ``skip + (mlp_out - skip).detach()`` (``skip`` the transcoder's linear skip path, or 0), so
  no gradient crosses an MLP. Permanent hooks detach every attention pattern and every norm
  scale (``ln1``, ``ln2``, ``ln_final``, and ``ln*_post`` where present); parameters do not
  require gradients; ``hook_embed``'s output does.
* **Rows.** One forward pass of the prompt repeated ``batch_size`` times caches the residual
  stream at each layer's transcoder input and at the unembedding's input (``ln_final`` applied
  by hand). For a batch of targets it hooks those cached tensors to *replace* the incoming
  gradient at (row, position) with the target's direction (a feature's encoder row, so the
  target is its pre-activation; a logit's unembedding column minus the mean column), then
  runs one backward pass from the deepest target layer (``retain_graph`` between batches).
  Backward hooks read the gradient at each MLP output and at ``hook_embed`` and contract it
  with the sources' vectors: activation x decoder row for active features, the error vector
  for error nodes, ``W_E[token]`` for token nodes. Latents are never leaves: no gradient is
  ever ``d_sae`` wide.
* **Position 0.** Latents and error vectors at position 0 are set to zero (no feature nodes
  there); the forward pass keeps the real MLP output, whose effect becomes a constant. A
  prompt that does not start with a special token gets one (BOS, else pad, eos ...).
* **Nodes.** ``[active features (layer, position, feature), error nodes (layer-major, every
  position), token embeddings, logits]``; ``adjacency[target, source]``. An embedding node is
  the token embedding alone; the positional embedding is no node.
* **Logits.** The fewest most probable tokens reaching cumulative probability 0.95, at most 10
  (or given ids); a logit's weight is its probability.
* **Influence and pruning.** ``|A|`` row-normalised, influence ``w (Â + Â² + ...)``.
  ``prune_graph`` (0.8 nodes, 0.98 edges) ranks *all* nodes by influence (errors and tokens
  included) and keeps those up to the cumulative threshold plus every token and logit; edge
  scores use the influence recomputed on the node-pruned graph plus the logit weights; then
  it repeatedly drops features and errors with no kept outgoing edge and features with no kept
  incoming one.
* **Batch sizes.** ``attribute`` 512 rows per backward pass by default, the CLI 256 (and at
  most 7,500 feature nodes, visited in order of estimated influence, re-ranked every 4
  batches); here both sides use ``--batch`` (128).
"""
