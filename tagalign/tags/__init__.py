"""Captions -> tags -> vocabulary -> labels -> tag embeddings (the files training needs).

This package needs only the standard library, numpy, nltk and (for parquet shards) pyarrow, so tag parsing can
run in a separate environment with vLLM (which pins its own torch); only the embedding stage needs open_clip.
"""
