# Reference schedule: AdamW (eps 1e-6, wd 0.05 incl. 0-dim gates/temperatures), constant lr 1e-3 at a global
# batch of 4096 (scaled linearly), no warmup, grad-norm clip 5, fp16 AMP, 30k iterations.
optim_wrapper = dict(
    type="AmpOptimWrapper",
    dtype="float16",  # "bfloat16" for bf16
    optimizer=dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    constructor="TagAlignOptimWrapperConstructor",
    paramwise_cfg=dict(decay_scalars=True),
)
param_scheduler = []  # constant learning rate
train_cfg = dict(type="ResumableIterBasedTrainLoop", max_iters=30000, val_interval=10**9)
auto_scale_lr = dict(enable=True, base_batch_size=4096)
