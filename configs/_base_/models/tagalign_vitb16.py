# TagAlign on OpenAI CLIP ViT-B/16 (QuickGELU), reference projector and losses.
tags_dir = "data/tags"
model = dict(
    type="TagAlignTrainModel",
    clip="ViT-B-16",
    pretrained="openai",
    tag_embeddings=f"{tags_dir}/tag_embeddings.pt",
    tag_frequency=f"{tags_dir}/tag_frequency.npy",
    # the dense encoder the projector reads: "surgery" (TagAlign) or any tagalign.models.ENCODERS name, e.g.
    # "clearclip" or "naclip" (--cfg-options model.encoder=clearclip); checkpoints record it
    encoder="surgery",
    surgery_layers=6,
    projector=dict(type="gated_conv", num_units=4, kernel_size=3),
    # tag_mode: "balanced" (paper Eq. 4, the default here) | "softmax" (the authors' released code) | "weighted" |
    # "focal" | "asymmetric"
    loss=dict(tag_mode="balanced", itc_weight=1.0, tag_weight=1.0, prob_clamp=1e-8),
)
