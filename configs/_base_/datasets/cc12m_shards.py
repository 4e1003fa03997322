# img2dataset webdataset shards of CC12M joined with tools/parse_tags.py labels by sample key.
train_dataloader = dict(
    batch_size=512,  # per GPU: 8 x 512 = 4096 as in the reference
    num_workers=10,
    persistent_workers=False,
    pin_memory=True,
    sampler=None,
    collate_fn=dict(type="collate_tag_batch"),
    dataset=dict(
        type="TagAlignTrainData",
        shards="data/cc12m",
        labels="data/tags/labels.sqlite",
        clip="ViT-B-16",
        image_size=224,
        deit_aug=True,
        label_key="key",  # "url" to join on the URL in each sample's json (e.g. labels parsed from the CC12M tsv)
        drop_empty=False,  # reference: samples with no tag stay, with a zero target
        shuffle_buffer=5000,
    ),
)
