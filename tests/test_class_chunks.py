"""Evaluation a chunk of classes at a time gives the labels of the all-at-once statement of each protocol.

The statements (tests/test_protocols.py) hold every class at full resolution; here the segmentor's memory budget is
set so that each chunk holds about two queries, which would cut the three-name background and the two-name person
class in half if chunks were counted in queries. Both protocols run with synonyms, PAMR, and (``sclip``) area_thd
and prob_thd thresholds placed where they move pixels; ``tagalign`` with its constant background channel.
"""

from __future__ import annotations

import pytest
import torch
from test_protocols import (
    CLASSES,
    QUERY_CLASS,
    _predict,
    _random_texts,
    _sclip_statement,
    _segmentor,
    _tagalign_statement,
    gap_threshold,
)

from tagalign.segmentation.class_chunks import ClassChunk, bytes_per_query, plan_chunks
from tagalign.segmentation.inference import InferenceConfig
from tagalign.segmentation.segmentor import TagAlignSegmentor


def test_chunks_hold_whole_classes():
    # a plain two-query split of [0 0 0 1 2 2 3 4] would cut class 0 after its second query
    assert plan_chunks(QUERY_CLASS, 5, 2) == [
        ClassChunk(slice(0, 1), slice(0, 3)), ClassChunk(slice(1, 2), slice(3, 4)),
        ClassChunk(slice(2, 3), slice(4, 6)), ClassChunk(slice(3, 5), slice(6, 8))]
    # a class without queries (the constant background channel) joins the next class
    assert plan_chunks([1, 2, 3], 4, 1) == [ClassChunk(slice(0, 2), slice(0, 1)), ClassChunk(slice(2, 3), slice(1, 2)),
                                            ClassChunk(slice(3, 4), slice(2, 3))]
    assert plan_chunks(QUERY_CLASS, 5, 100) == [ClassChunk(slice(0, 5), slice(0, 8))]


def _two_queries_per_chunk(cfg: InferenceConfig, input_size, out_size) -> float:
    return 2.5 * bytes_per_query(cfg, input_size, out_size) / 2**20


def _labels(seg, image, out_size, budget_mb):
    seg.inference_cfg = InferenceConfig(**{**seg.inference_cfg.__dict__, "map_budget_mb": budget_mb})
    seg.keep_logits = False
    result = _predict(seg, image, out_size)
    assert "seg_logits" not in result  # the metric needs only the labels
    return result.pred_sem_seg.data[0], len(seg.chunks(tuple(image.shape[-2:]), out_size))


def test_sclip_protocol_in_chunks_equals_the_statement(clip_file):
    with torch.random.fork_rng():  # the projector's initialisation: the same model whatever ran before
        torch.manual_seed(0)
        seg = _segmentor(clip_file, "naclip", "sclip")
    texts = _random_texts(len(QUERY_CLASS), seg.text_emb.shape[1], seed=9)
    seg.text_emb = texts
    image = torch.randn(1, 3, 80, 112, generator=torch.Generator().manual_seed(4))
    out_size = (70, 100)
    fields = dict(protocol="sclip", mix="similarities", crop=64, stride=32, logit_scale=65.0, pamr=True,
                  pamr_iter=3, pamr_dilations=(1, 2))
    probs, labels = _sclip_statement(seg, "naclip", image, texts, InferenceConfig(**fields), out_size)
    areas = torch.bincount(labels.flatten(), minlength=len(CLASSES))[1:].float()
    fractions = (areas[areas > 0] / areas.sum()).sort().values
    assert len(fractions) >= 3
    fields["area_thd"] = (fractions[0] + fractions[1]).item() / 2  # drops the smallest foreground class
    smallest = 1 + int(torch.where(areas > 0, areas, areas.max() + 1).argmin())
    fields["prob_thd"] = gap_threshold(probs.max(0).values)
    cfg = InferenceConfig(**fields)
    _, expected = _sclip_statement(seg, "naclip", image, texts, cfg, out_size)
    assert (labels == smallest).any() and not (expected == smallest).any()  # area_thd dropped it
    assert (expected == 0).sum() > (labels == 0).sum()  # prob_thd moved pixels to class 0
    seg.inference_cfg = cfg
    chunked, chunks = _labels(seg, image, out_size, _two_queries_per_chunk(cfg, image.shape[-2:], out_size))
    assert chunks == 4
    assert torch.equal(chunked, expected)
    whole, chunks = _labels(seg, image, out_size, 256.0)
    assert chunks == 1 and torch.equal(whole, expected)


def test_tagalign_protocol_in_chunks_equals_the_statement(clip_file):
    classes = [["background"], *CLASSES[1:]]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        seg = TagAlignSegmentor(classes, clip="tagalign-tiny", pretrained=clip_file, templates=["a photo of a {}."],
                                inference=dict(crop=64, stride=32, pamr=True, pamr_iter=3, pamr_dilations=(1, 2),
                                               bg_thresh=0.3))
    with torch.no_grad():
        for name, param in seg.tagalign.projector.named_parameters():
            if name.endswith("gate"):
                param.fill_(0.7)
    texts = _random_texts(len(seg.query_class), seg.text_emb.shape[1], seed=12)
    seg.text_emb = texts
    image = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(6))
    out_size = (120, 150)
    cfg = seg.inference_cfg
    probs, expected = _tagalign_statement(seg, image, texts, cfg, out_size, with_background=True)
    assert len(expected.unique()) == len(CLASSES)  # background and every class win somewhere
    chunked, chunks = _labels(seg, image, out_size, _two_queries_per_chunk(cfg, image.shape[-2:], out_size))
    assert chunks == 3  # [background, cat], [person, person in shirt], [dog, car]
    assert torch.equal(chunked, expected)


def test_ties_across_chunks_go_to_the_lower_class():
    from tagalign.segmentation.class_chunks import RunningArgmax

    running = RunningArgmax()
    running.update(torch.tensor([[[0.2, 0.5]], [[0.7, 0.1]]]), first_class=0)  # [2 classes, 1, 2 pixels]
    running.update(torch.tensor([[[0.7, 0.4]], [[0.1, 0.5]]]), first_class=2)
    assert running.label.tolist() == [[1, 0]] and torch.equal(running.best, torch.tensor([[0.7, 0.5]]))


@pytest.mark.parametrize("protocol", ["tagalign", "sclip"])
def test_a_chunk_of_queries_gets_the_bits_it_gets_among_all(protocol, tiny_clip):
    """Labels equal to the last bit need each query's map to be the same number whatever shares the call (a
    channels-last grid would make bilinear upsampling vectorise over the queries and break this)."""
    from tagalign.models import TagAlign
    from tagalign.segmentation.windows import WindowScores

    model = TagAlign(tiny_clip).eval()
    texts = _random_texts(40, model.projector_dim if hasattr(model, "projector_dim") else 64, seed=2)
    image = torch.randn(1, 3, 96, 150, generator=torch.Generator().manual_seed(3))
    scores = WindowScores(model, image, texts, InferenceConfig(protocol=protocol, crop=64, stride=32))
    everything = scores.average()
    for queries in (slice(0, 1), slice(3, 10), slice(10, 40)):
        assert torch.equal(scores.average(queries), everything[:, queries])
