# Tag count ablation (paper Tables 3-4: 20k LLM object tags for the headline numbers). Build the labels with
#   tools/parse_tags.py merge data/tags_20k --top-k-objects 20000 --top-k-attributes 0 && ... embed data/tags_20k
# (the default configs/tagalign_cc12m.py expects data/tags built with --top-k-attributes 0 too: objects only).
_base_ = ["../tagalign_cc12m.py"]
tags = "data/tags_20k"
model = dict(tag_embeddings=f"{tags}/tag_embeddings.pt", tag_frequency=f"{tags}/tag_frequency.npy")
train_dataloader = dict(dataset=dict(labels=f"{tags}/labels.sqlite"))
work_dir = "work_dirs/ablations/tags_20k_objects_only"
