# RAM++'s automatic re-weighting (paper Eq. 1) in the tag loss: per image, the tag's descriptions are weighted by a
# softmax of their cosine with the image feature (learnable temperature, initially 1/0.07). Embeddings: see
# configs/ablations/tag_descriptions.py.
_base_ = ["./tag_descriptions.py"]
model = dict(tag_text="reweighted")
work_dir = "work_dirs/ablations/tag_descriptions_reweighted"
