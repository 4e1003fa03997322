# Runtime shared by every training config: registries, logging, checkpoints, TensorBoard, seeding.
custom_imports = dict(imports=["tagalign.training"], allow_failed_imports=False)
default_scope = None
work_dir = "work_dirs/tagalign"
launcher = "none"
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0),
               dist_cfg=dict(backend="nccl"))
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", interval=5000, by_epoch=False, max_keep_ckpts=3, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
custom_hooks = [dict(type="TrainingStatsHook"), dict(type="ExportTagAlignCheckpointHook")]
log_processor = dict(by_epoch=False, window_size=50)
visualizer = dict(type="Visualizer", vis_backends=[dict(type="LocalVisBackend"), dict(type="TensorboardVisBackend")])
log_level = "INFO"
randomness = dict(seed=0, diff_rank_seed=True)
resume = False
load_from = None
