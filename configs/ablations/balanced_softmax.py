# Paper Eq. 4: balanced softmax (log-frequency prior added to the tag logits in training).
_base_ = ["../tagalign_cc12m.py"]
model = dict(loss=dict(tag_mode="balanced"))
work_dir = "work_dirs/ablations/balanced_softmax"
