# The embedded default: TagAlign on a tiny CLIP pretrained on the generated shapes world, a few hundred iterations on
# CPU. Run it with `python tools/quickstart.py`, which generates the data and pretrains the CLIP under
# work_dirs/quickstart/data first (tags/ holds objects and attributes; tags_objects/ the objects-only ablation).
_base_ = ["_base_/default_runtime.py", "_base_/schedules/constant_30k.py"]
data_root = "work_dirs/quickstart/data"
work_dir = "work_dirs/quickstart/train"
model = dict(
    type="TagAlignTrainModel",
    clip="tagalign-tiny-112",
    pretrained=f"{data_root}/tiny_clip",  # open_clip folder: the tiny CLIP pretrained contrastively on the world
    tag_embeddings=f"{data_root}/tags/tag_embeddings.pt",
    tag_frequency=f"{data_root}/tags/tag_frequency.npy",
    # the dense encoder the projector reads: "surgery" (TagAlign) or any tagalign.models.ENCODERS name, e.g.
    # "clearclip" or "naclip" (--cfg-options model.encoder=clearclip); checkpoints record it
    encoder="surgery",
    surgery_layers=6,
    projector=dict(type="gated_conv", num_units=4, kernel_size=3),
    loss=dict(tag_mode="softmax", itc_weight=1.0, tag_weight=1.0),
)
train_dataloader = dict(
    batch_size=32,
    num_workers=2,
    persistent_workers=False,
    sampler=None,
    collate_fn=dict(type="collate_tag_batch"),
    dataset=dict(type="TagAlignTrainData", shards=f"{data_root}/shards", labels=f"{data_root}/tags/labels.sqlite",
                 clip="tagalign-tiny-112", image_size=112, deit_aug=False, shuffle_buffer=500),
)
optim_wrapper = dict(  # fp32 on CPU; otherwise the reference settings
    _delete_=True,
    type="OptimWrapper",
    optimizer=dict(type="AdamW", lr=8e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.05),
    clip_grad=dict(max_norm=5.0),
    constructor="TagAlignOptimWrapperConstructor",
)
auto_scale_lr = dict(enable=False)
train_cfg = dict(max_iters=500)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend="gloo"))
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(interval=250, max_keep_ckpts=2))
visualizer = dict(vis_backends=[dict(type="LocalVisBackend")])
