# Objects + attributes (paper Table 2 "TagAlign + Attri."). Build the labels with attributes kept:
#   tools/parse_tags.py merge data/tags_attr --top-k-objects 10000 --top-k-attributes 1000 && ... embed data/tags_attr
_base_ = ["../tagalign_cc12m.py"]
tags = "data/tags_attr"
model = dict(tag_embeddings=f"{tags}/tag_embeddings.pt", tag_frequency=f"{tags}/tag_frequency.npy")
train_dataloader = dict(dataset=dict(labels=f"{tags}/labels.sqlite"))
work_dir = "work_dirs/ablations/objects_and_attributes"
