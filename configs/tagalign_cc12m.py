# The paper's recipe: OpenAI ViT-B/16, CC12M with parse_tags labels, balanced-softmax tag loss (Eq. 4) + ITC,
# 30k iterations at a global batch of 4096 (8 GPUs x 512). The reference used object tags only: build data/tags
# with `tools/parse_tags.py merge data/tags --top-k-objects 10000 --top-k-attributes 0` to match it.
# The authors' released code trains with plain softmax instead: configs/tagalign_cc12m_released.py.
#   torchrun --nproc_per_node=8 tools/train.py configs/tagalign_cc12m.py --launcher pytorch
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/tagalign_vitb16.py",
    "_base_/datasets/cc12m_shards.py",
    "_base_/schedules/constant_30k.py",
]
work_dir = "work_dirs/tagalign_cc12m"
