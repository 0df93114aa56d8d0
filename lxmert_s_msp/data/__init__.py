"""Data: public-format readers, the feature store, corpora, the synthetic world and the collators."""
