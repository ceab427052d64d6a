"""Verdicts of the review of the honest "before" run (results_before.json): phrase matches that do
not name the entry's mistake, and caught rows whose diagnosis misleads."""
NOT_NAMED = {
 "ch00_toolkit.reconstruction_metrics.metrics_scalar_variance": "names a different mistake (uncentred, sum ||x||^2); the mistake centres on one scalar mean",
 "ch01_attribution.latent_to_logit_gradients.logit_grads_by_token_id": "a bare shape mismatch; 'shape' matched, nothing says the first dim is d_vocab",
 "ch02_error_nodes.error_term.error_flat_attention": "says a dim is missing / reduced; the mistake flattens n_heads and d_head",
 "ch03_feature_circuits.edge_effects.edges_no_error_column": "misleading: blames BOS for the missing error column",
 "ch03_feature_circuits.ablation_edges.ablation_input_hook_name": "a KeyError blamed on contextlib.py; 'hook' matched the key",
 "ch03_feature_circuits.probe_latent_effects.probe_default_mean_baseline": "'was the result never written?' is wrong; 'zero' matched 'all zeros'",
 "ch04_transcoders.upstream_ablation_effects.abl_input_hook_name": "a KeyError blamed on contextlib.py; 'hook' matched the key",
 "ch04_transcoders.blind_case_study.blind_tokens_as_upstream": "says main upstream latents were missed; nothing says token ids were given",
 "ch04_transcoders.blind_case_study.blind_inhibitors": "says main upstream latents were missed; nothing about sign/order",
 "ch05_attribution_graphs.salient_logits.salient_excludes_crossing": "'includ' matched 'BOS included': a misleading BOS hint",
 "ch05_attribution_graphs.logit_influence.influence_signed": "generic; 'abs' matched 'max abs diff'",
 "ch05_attribution_graphs.logit_influence.influence_wrong_side": "'was the result never written' is wrong; 'side' matched 'outside'",
 "ch06_training.density_stats.density_wrong_dim": "a bare shape mismatch; 'shape' matched",
 "ch06_training.label_precision.precision_wrong_dim": "a bare shape mismatch; 'shape' matched",
}
NAMED_ANYWAY = {}
NOT_NAMED.update({
 "ch02_error_nodes.ablate_nodes.ablate_error_everywhere": "misleading: another mistake's signature (no error term) matched by coincidence",
 "ch05_attribution_graphs.prune_by_influence.prune_sorted_order_mask": "misleading: another mistake's signature (per-entry threshold) matched by coincidence",
 "ch00_toolkit.max_activating_contexts.contexts_smallest": "misleading: 'was the result never written?'",
 "ch01_attribution.latent_to_latent_gradients.l2l_negative_pos": "misleading: 'was the result never written?' for an unwrapped negative position",
 "ch01_attribution.token_to_latent_gradients.t2l_negative_pos": "misleading: 'was the result never written?' for an unwrapped negative position",
 "ch02_error_nodes.ablate_nodes.ablate_reads_hook": "a KeyError blamed on contextlib.py",
 "ch02_error_nodes.error_attribution.error_attr_reads_hook": "a KeyError blamed on contextlib.py",
})
