# Tag classification only (paper Table 3 "w/o ITC"; impossible in the reference code because of its bug B1).
_base_ = ["../tagalign_cc12m.py"]
model = dict(loss=dict(itc_weight=0.0))
work_dir = "work_dirs/ablations/no_itc"
