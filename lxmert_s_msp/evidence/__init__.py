"""Evidence: what the experiments measure and draw (grounding, stage figures, tables, world baselines)."""
