"""Vision data-curation methods (noisy labels, condensation, active learning, ...) on shared utilities."""
