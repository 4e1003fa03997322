# The authors' released code (reference spec §4.2, §7.1): the paper's recipe with the plain softmax tag loss, the
# balanced branch commented out as in their last run.
#   torchrun --nproc_per_node=8 tools/train.py configs/tagalign_cc12m_released.py --launcher pytorch
_base_ = ["tagalign_cc12m.py"]
model = dict(loss=dict(tag_mode="softmax"))
work_dir = "work_dirs/tagalign_cc12m_released"
