"""Open-set image tagging, RAM++ style: LLM tag descriptions, description embeddings (ensemble and re-weighting),
and the tagging benchmarks with RAM's metrics (docs/tagging.md)."""
