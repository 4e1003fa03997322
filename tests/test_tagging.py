"""RAM++-style tagging: metrics, benchmark files, descriptions, re-weighting and `tools/test.py --task tagging`.

Expected values are computed here from the definitions of the tagging spec (§2.4, §4), independently of the code.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tagalign.models.description_file import load_descriptions, write_descriptions
from tagalign.models.text import DescriptionBank, reweighted_cosines, reweighted_embeddings
from tagalign.tagging.benchmark import read_benchmark, write_benchmark
from tagalign.tagging.descriptions import classify_description
from tagalign.tagging.metrics import tagging_metrics

ROOT = Path(__file__).resolve().parents[1]


def spec_ap(scores: list[float], labels: list[int]) -> float:
    """RAM's AP, restated: rank by score (ties: earlier image first), average precision at each positive."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if labels[i]:
            hits += 1
            total += hits / rank
    return total / (sum(labels) + 1e-8)


def spec_metrics(scores: np.ndarray, targets: np.ndarray, threshold: float) -> dict:
    n, t = targets.shape
    ap, precision, recall = [], [], []
    for c in range(t):
        column = [float(v) for v in scores[:, c]]
        labels = [int(v) for v in targets[:, c]]
        ap.append(spec_ap(column, labels))
        predicted = [v >= threshold for v in column]
        tp = sum(p and y for p, y in zip(predicted, labels))
        precision.append(tp / (sum(predicted) + 1e-9))
        recall.append(tp / (sum(labels) + 1e-9))
    positive = [c for c in range(t) if targets[:, c].any()]

    def mean(values, keep):
        return sum(values[c] for c in keep) / len(keep)

    result = {}
    for suffix, keep in (("", list(range(t))), ("_classes_with_positives", positive)):
        cp, cr = mean(precision, keep), mean(recall, keep)
        result.update({f"mAP{suffix}": 100 * mean(ap, keep), f"CP{suffix}": 100 * cp, f"CR{suffix}": 100 * cr,
                       f"F1{suffix}": 100 * 2 * cp * cr / (cp + cr) if cp + cr else 0.0})
    return result


def test_metrics_equal_the_definitions_with_untagged_images_ties_and_classes_without_positives():
    rng = np.random.default_rng(0)
    scores = rng.normal(0.2, 0.1, size=(30, 6)).astype(np.float32)
    scores[:, 2] = np.round(scores[:, 2], 1)  # ties: the order is fixed by the image index
    targets = rng.random((30, 6)) < 0.3
    targets[:, 4] = False  # a tag without positives
    targets[[3, 11]] = False  # images without tags
    result = tagging_metrics(scores, targets, 0.25)
    expected = spec_metrics(scores, targets, 0.25)
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key
    untagged = [i for i in range(30) if not targets[i].any()]
    assert 3 in untagged and 11 in untagged and result["images_without_tags"] == len(untagged)
    assert result["AP"][4] == 0 and result["classes_with_positives"] == 5
    assert result["mAP"] < result["mAP_classes_with_positives"]


def test_benchmark_files_by_name_and_by_index(tmp_path):
    (tmp_path / "t.txt").write_text("cat\ndog\nperson sit_on chair\ndog\n")  # a duplicate name, as ImageNet's
    (tmp_path / "names.txt").write_text("test/0a1,cat,dog\ntest/0b2\ntest/0c3,person sit_on chair\n")
    bench = read_benchmark(tmp_path / "t.txt", tmp_path / "names.txt", tmp_path / "imgs")
    assert bench.targets.tolist() == [[1, 1, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]]
    assert bench.images[0] == tmp_path / "imgs/test/0a1.jpg"
    (tmp_path / "idx.txt").write_text("ILSVRC2012_val_00000001.JPEG,0 2\nILSVRC2012_val_00000002.JPEG\n"
                                      "HICO_test2015_00000003.jpg,3")  # no final newline, as the released files
    bench = read_benchmark(tmp_path / "t.txt", tmp_path / "idx.txt", tmp_path / "imgs")
    assert bench.targets.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert bench.images[0].name == "ILSVRC2012_val_00000001.JPEG"
    (tmp_path / "bad.txt").write_text("a.jpg,cat\nb.jpg,zebra\n")
    with pytest.raises(ValueError, match=r"bad.txt:2: tag 'zebra' is not in t.txt"):
        read_benchmark(tmp_path / "t.txt", tmp_path / "bad.txt", tmp_path)
    (tmp_path / "bad_idx.txt").write_text("a.jpg,0 9\n")
    with pytest.raises(ValueError, match=r"bad_idx.txt:1: expected 0-based indices into the 4 tags"):
        read_benchmark(tmp_path / "t.txt", tmp_path / "bad_idx.txt", tmp_path, annots_format="indices")


def test_description_filter_and_ram_layout(tmp_path):
    assert classify_description("  A frigate is a warship.  ", "Frigate") == ("kept", "A frigate is a warship.")
    assert classify_description("Knives have a blade. They are sha", "knife", "length") == \
        ("trimmed", "Knives have a blade.")
    assert classify_description("1. F", "Frigate", "length")[0] == "cut"
    assert classify_description("   ", "cat")[0] == "empty"
    assert classify_description("It has four legs.", "cat")[0] == "off_topic"
    assert classify_description("A person sitting on a chair.", "person sit_on chair")[0] == "kept"
    path = write_descriptions(tmp_path / "d.json", {"Cat": ["a photo of a cat.", "A cat is small."], "dog": ["x"]})
    data = json.loads(path.read_text())
    assert data == [{"Cat": ["a photo of a cat.", "A cat is small."]}, {"dog": ["x"]}]
    assert list(load_descriptions(path)) == ["Cat", "dog"]
    path.write_text(json.dumps([{"cat": ["a"], "dog": ["b"]}]))
    with pytest.raises(ValueError, match="element 0 should be an object with exactly one key"):
        load_descriptions(path)


def spec_reweighted(query: torch.Tensor, texts: list[list[torch.Tensor]], tau: float) -> list[list[torch.Tensor]]:
    """Spec §2.4 as written: q^ = q/|q|; w_k = exp(tau q^.D_k) / sum_k' exp(tau q^.D_k'); e = sum_k w_k D_k."""
    out = []
    for q in query:
        q_hat = q / q.norm()
        row = []
        for descriptions in texts:
            logits = [tau * float(q_hat @ d) for d in descriptions]
            top = max(logits)
            exps = [math.exp(v - top) for v in logits]
            row.append(sum((e / sum(exps)) * d for e, d in zip(exps, descriptions)))
        out.append(row)
    return out


def _bank(texts: list[list[torch.Tensor]]) -> DescriptionBank:
    width = max(len(t) for t in texts)
    emb = torch.zeros(len(texts), width, texts[0][0].shape[0])
    mask = torch.zeros(len(texts), width, dtype=torch.bool)
    for i, descriptions in enumerate(texts):
        emb[i, : len(descriptions)] = torch.stack(descriptions)
        mask[i, : len(descriptions)] = True
    return DescriptionBank(emb, mask)


def test_reweighting_equals_the_formula_with_different_description_counts():
    generator = torch.Generator().manual_seed(0)
    texts = [[F.normalize(torch.randn(16, generator=generator), dim=0) for _ in range(k)] for k in (5, 1, 3, 7)]
    query = torch.randn(3, 16, generator=generator) * 4
    expected = spec_reweighted(query, texts, 1 / 0.07)
    bank = _bank(texts)
    embeddings = reweighted_embeddings(query, bank)
    cosines = reweighted_cosines(query, bank)
    for b in range(3):
        for c in range(4):
            assert torch.allclose(embeddings[b, c], expected[b][c], atol=1e-6)
            want = float(F.cosine_similarity(query[b], expected[b][c], dim=0))
            assert cosines[b, c].item() == pytest.approx(want, abs=1e-6)
    ensemble = bank.ensemble()
    assert torch.allclose(ensemble[2], F.normalize(sum(texts[2]) / 3, dim=0), atol=1e-6)


@pytest.fixture(scope="module")
def custom_benchmark(tmp_path_factory):
    """A tiny model checkpoint (non-identity projector, random biases/LayerNorms) and a 14-image benchmark in RAM's
    layout with an untagged image, a tag without positives and an unreadable image."""
    from random_affine import randomize_affine_

    from tagalign.data.synthetic import COLOURS, SHAPES, render_scene
    from tagalign.models import TagAlign, load_clip, save_checkpoint

    root = tmp_path_factory.mktemp("tagging")
    torch.manual_seed(0)
    torch.save(randomize_affine_(load_clip("tagalign-tiny"), seed=3).state_dict(), root / "clip.pt")
    model = TagAlign(load_clip("tagalign-tiny", str(root / "clip.pt")), surgery_layers=6)
    with torch.no_grad():
        for unit in model.projector.units:
            unit.gate.fill_(0.3)
    save_checkpoint(model, root / "ckpt.pth")
    rng = np.random.default_rng(0)
    scenes = [render_scene(rng, size=(96, 128), min_objects=0, max_objects=0 if i == 5 else 2) for i in range(14)]
    tags = [*COLOURS, *SHAPES, "hexagon"]
    items = [(s.image, sorted({c for c, _ in s.objects} | {h for _, h in s.objects})) for s in scenes]
    taglist, annots, images = write_benchmark(root / "bench", "mini", tags, items)
    (images / "mini_00007.png").write_bytes(b"not a png")
    descriptions = {tag: [f"a photo of a {tag}.", f"A {tag} thing.", f"Something {tag} in a picture."]
                    for tag in tags[:-2]}  # the last two tags have no description
    write_descriptions(root / "desc.json", descriptions)
    return root, model.eval(), tags, taglist, annots, images, descriptions


def test_tools_test_tagging_equals_an_independent_computation(custom_benchmark):
    from tagalign.data.transforms import load_image, to_tensor
    from tagalign.models import encode_texts

    root, model, tags, taglist, annots, images, descriptions = custom_benchmark
    bench = read_benchmark(taglist, annots, images)
    pixels = []
    for path in bench.images:
        try:
            array = load_image(path)
        except ValueError:
            array = np.zeros((10, 10, 3), dtype=np.uint8)  # RAM's stand-in for an unreadable image
        pixels.append(F.interpolate(to_tensor(array), size=(224, 224), mode="bilinear", align_corners=False))
    pixels = torch.cat(pixels)
    with torch.no_grad():
        global_emb = model.clip.encode_image(pixels)  # open_clip's own forward: CLS -> ln_post -> proj
        dense = model.dense_features(pixels)
    pooled = dense.mean(dim=(2, 3))
    patches = F.normalize(dense.flatten(2).transpose(1, 2), dim=-1)
    template = F.normalize(encode_texts(model.clip, tags, ["a photo of a {}."]), dim=-1)
    texts = [[F.normalize(e, dim=0) for e in encode_texts(model.clip, descriptions.get(t, [f"a photo of a {t}."]),
                                                          ["{}"])] for t in tags]
    ensemble = torch.stack([F.normalize(sum(d) / len(d), dim=0) for d in texts])
    expected = {
        "clip/template": F.normalize(global_emb, dim=-1) @ template.t(),
        "pooled/template": F.normalize(pooled, dim=-1) @ template.t(),
        "max/descriptions": torch.einsum("bpd,td->bpt", patches, ensemble).amax(dim=1),
        "pooled/reweighted": torch.tensor([[float(F.cosine_similarity(pooled[b], e, dim=0)) for e in row]
                                           for b, row in enumerate(spec_reweighted(pooled, texts, 1 / 0.07))]),
    }
    ordered = expected["pooled/template"].flatten().sort().values
    middle = len(ordered) // 2
    threshold = float(ordered[middle - 1] + ordered[middle]) / 2  # between two scores: splits that row in halves
    out = root / "result.json"
    command = [sys.executable, str(ROOT / "tools/test.py"), "--task", "tagging", "--dataset", "custom",
               "--taglist", str(taglist), "--annots", str(annots), "--images", str(images), "--checkpoint",
               str(root / "ckpt.pth"), "--pretrained", str(root / "clip.pt"), "--scoring", "clip", "pooled", "max",
               "--prompts", "template", "descriptions", "reweighted", "--descriptions", str(root / "desc.json"),
               "--threshold", str(threshold), "--batch-size", "5", "--out", str(out)]  # default size: the CLIP's 224
    run = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "| max/reweighted |" in run.stdout and "classes have a positive" in run.stdout
    assert result["unreadable_images"] == [str(images / "mini_00007.png")]
    assert result["tags_without_descriptions"] == tags[-2:]

    for key, scores in expected.items():
        want = spec_metrics(scores.numpy(), bench.targets, threshold)
        for metric in ("mAP", "mAP_classes_with_positives", "CP", "CR", "F1"):
            assert result["rows"][key][metric] == pytest.approx(want[metric], abs=1e-6), (key, metric)
    assert len(result["rows"]) == 9
    first = result["rows"]["clip/template"]
    assert first["images_without_tags"] >= 1 and first["classes_with_positives"] < first["classes"] == len(tags)
    assert 0 < result["rows"]["pooled/template"]["CR"] < 100 and result["rows"]["pooled/template"]["CP"] > 0


def _vocab_folder(folder: Path, tags: list[str]) -> None:
    """A merged tag folder whose vocabulary is ``tags`` (parse records written directly, then the real merge)."""
    from tagalign.tags.merge import merge_parsed

    (folder / "parsed").mkdir(parents=True)
    records = [{"key": f"k{i}", "caption": tag, "objects": [tag], "attributes": [], "status": "ok"}
               for i, tag in enumerate(tags)]
    (folder / "parsed/part-00000-000000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (folder / "stats").mkdir()
    (folder / "stats/shard-00000.json").write_text(json.dumps({"shard_id": 0, "num_shards": 1}))
    merge_parsed(folder)


def test_description_embeddings_train_the_tag_loss_with_reweighting(tmp_path, tiny_clip):
    from tagalign.models import encode_texts
    from tagalign.tags.embed import load_tag_embeddings
    from tagalign.tags.vocab import TagVocab
    from tagalign.training.model import TagAlignTrainModel

    _vocab_folder(tmp_path / "tags", ["cat", "dog", "tree", "car"])
    tags = TagVocab.load(tmp_path / "tags/vocab.csv").tags
    descriptions = {"cat": ["a photo of a cat.", "A cat has whiskers.", "A small cat."],
                    "tree": ["a photo of a tree.", "A tree is tall and green."], "dog": ["a photo of a dog."]}
    write_descriptions(tmp_path / "tags/tag_descriptions.json", descriptions)  # "car" has none
    torch.save(tiny_clip.state_dict(), tmp_path / "clip.pt")
    command = [sys.executable, str(ROOT / "tools/parse_tags.py"), "embed", str(tmp_path / "tags"), "--clip",
               "tagalign-tiny", "--pretrained", str(tmp_path / "clip.pt"), "--text", "both"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    payload = load_tag_embeddings(tmp_path / "tags/tag_embeddings.pt")
    texts = [[F.normalize(e, dim=0) for e in encode_texts(tiny_clip, descriptions.get(t, [f"a photo of a {t}."]),
                                                          ["{}"], cache_dir=False)] for t in tags]
    assert torch.allclose(payload["template_embeddings"], encode_texts(tiny_clip, tags, cache_dir=False), atol=1e-5)
    assert torch.allclose(payload["ensemble_embeddings"],
                          torch.stack([F.normalize(sum(d) / len(d), dim=0) for d in texts]), atol=1e-5)
    assert payload["text"] == "both" and payload["descriptions"]["tags_without_descriptions"] == ["car"]
    assert payload["descriptions"]["per_tag"] == [len(d) for d in texts]

    model = TagAlignTrainModel("tagalign-tiny", str(tmp_path / "clip.pt"), str(tmp_path / "tags/tag_embeddings.pt"),
                               loss=dict(itc_weight=0.0), tag_text="reweighted")
    with torch.no_grad():
        for unit in model.tagalign.projector.units:
            unit.gate.fill_(0.3)
        model.tagalign.reweight_scale.logit_scale.fill_(math.log(7.0))
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = [[0, 2], [1], []]
    loss = model(images, None, targets)["loss_tag"]
    with torch.no_grad():
        image_emb = model.tagalign.dense_features(images).mean(dim=(2, 3))
    cos = torch.tensor([[float(F.cosine_similarity(image_emb[b], e, dim=0)) for e in row]
                        for b, row in enumerate(spec_reweighted(image_emb, texts, 7.0))])
    probabilities = (cos / 0.07).softmax(dim=-1)  # the tag loss's own temperature starts at 1/0.07
    expected = 0.0
    for b, ids in enumerate(targets):
        expected -= sum(math.log(max(float(probabilities[b, i]), 1e-8)) / len(ids) for i in ids)
    assert loss.item() == pytest.approx(expected / 3, abs=1e-5)
    loss.backward()
    assert model.tagalign.reweight_scale.logit_scale.grad.abs() > 0  # the re-weighting temperature learns
    ensemble = TagAlignTrainModel("tagalign-tiny", str(tmp_path / "clip.pt"),
                                  str(tmp_path / "tags/tag_embeddings.pt"), tag_text="descriptions")
    assert torch.equal(ensemble.tagalign.tag_embeddings, payload["ensemble_embeddings"])

    import tagalign

    image = np.random.default_rng(0).integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
    ranked = tagalign.tag(model.tagalign.eval(), image, top_k=4, vocab=str(tmp_path / "tags/tag_embeddings.pt"),
                          prompts="reweighted", size=64)
    pixels = F.interpolate(torch.from_numpy(((image - np.array([123.675, 116.28, 103.53])) /
                                             np.array([58.395, 57.12, 57.375])).astype(np.float32))
                           .permute(2, 0, 1)[None], size=(64, 64), mode="bilinear", align_corners=False)
    with torch.no_grad():
        feature = model.tagalign.dense_features(pixels).mean(dim=(2, 3))
    want = [float(F.cosine_similarity(feature[0], e, dim=0)) for e in spec_reweighted(feature, texts, 7.0)[0]]
    assert [t for t, _ in ranked] == [tags[i] for i in np.argsort(want)[::-1]]
    assert [s for _, s in ranked] == pytest.approx(sorted(want, reverse=True), abs=1e-5)

    from tagalign.models import save_checkpoint

    save_checkpoint(model.tagalign, tmp_path / "ckpt.pth")  # the learned re-weighting temperature travels with it
    loaded = tagalign.load(tmp_path / "ckpt.pth", pretrained=str(tmp_path / "clip.pt"))
    assert loaded.reweight_scale().item() == pytest.approx(model.tagalign.reweight_scale().item())
    assert loaded.reweight_scale().item() != pytest.approx(1 / 0.07)

    template_only = tmp_path / "template.pt"
    torch.save({k: v for k, v in payload.items() if "description" not in k and k != "ensemble_embeddings"},
               template_only)
    with pytest.raises(ValueError, match="needs description embeddings"):
        TagAlignTrainModel("tagalign-tiny", str(tmp_path / "clip.pt"), str(template_only), tag_text="reweighted")


def test_two_processes_give_the_one_process_result(custom_benchmark):
    """``--launcher pytorch``: the images are shared among the processes and the scores gathered in file order."""
    root, _, _, taglist, annots, images, _ = custom_benchmark
    common = ["--task", "tagging", "--dataset", "custom", "--taglist", str(taglist), "--annots", str(annots),
              "--images", str(images), "--checkpoint", str(root / "ckpt.pth"), "--pretrained", str(root / "clip.pt"),
              "--scoring", "pooled", "mean", "--batch-size", "4", "--image-size", "64"]
    single = subprocess.run([sys.executable, str(ROOT / "tools/test.py"), *common, "--out", str(root / "one.json")],
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
              str(ROOT / "tools/test.py"), *common, "--launcher", "pytorch", "--out", str(root / "two.json")]
    double = subprocess.run(launch, capture_output=True, text=True, timeout=600, env={**os.environ,
                                                                                    "OMP_NUM_THREADS": "1"})
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = (json.loads((root / name).read_text())["rows"] for name in ("one.json", "two.json"))
    assert one.keys() == two.keys() == {"pooled/template", "mean/template"}
    for key in one:
        assert two[key]["AP"] == pytest.approx(one[key]["AP"], abs=1e-6)


def test_class_names_with_descriptions_get_their_ensemble(tiny_clip):
    from tagalign.models import encode_texts
    from tagalign.models.text import class_text_embeddings

    descriptions = {"red": ["a photo of a red.", "Something red like a tomato."]}
    embeddings = class_text_embeddings(tiny_clip, ["red", "blue"], ["a photo of a {}."], descriptions)
    described = F.normalize(encode_texts(tiny_clip, descriptions["red"], ["{}"]), dim=-1)
    assert torch.allclose(embeddings[0], F.normalize(described.mean(0), dim=0), atol=1e-6)
    assert torch.allclose(embeddings[1], F.normalize(encode_texts(tiny_clip, ["blue"], ["a photo of a {}."])[0],
                                                     dim=0), atol=1e-6)


def test_named_benchmarks_resolve_in_rams_layout(tmp_path):
    from tagalign.errors import MissingDatasetError
    from tagalign.tagging.benchmark import count_missing_images, resolve_benchmark

    hico = tmp_path / "hico"
    (hico / "imgs").mkdir(parents=True)
    (hico / "hico_600_taglist.txt").write_text("person ride bicycle\nperson no_interaction zebra\ndining_table")
    (hico / "hico_600_annots.txt").write_text("HICO_test2015_00000001.jpg,0 2\nHICO_test2015_00000002.jpg,1")
    (hico / "imgs/HICO_test2015_00000002.jpg").write_bytes(b"")
    bench = resolve_benchmark("hico", tmp_path)
    assert bench.targets.tolist() == [[1, 0, 1], [0, 1, 0]] and bench.spec.paper["RAM++-14M Swin-B"] == 37.7
    assert count_missing_images(bench) == 1 and bench.released_descriptions is None
    (hico / "imgs/HICO_test2015_00000002.jpg").unlink()
    with pytest.raises(MissingDatasetError, match="none of its 2 images exists"):
        count_missing_images(bench)
    rare = tmp_path / "openimages_rare_200"
    rare.mkdir()
    (rare / "openimages_rare_200_ram_taglist.txt").write_text("Aerial photography\nFull moon\n")
    (rare / "openimages_rare_200_ram_annots.txt").write_text("test/00a1b2c3d4e5f607,Full moon\n")
    released = rare / "openimages_rare_200_llm_tag_descriptions.json"
    write_descriptions(released, {"Full moon": ["a photo of a full moon."]})
    bench = resolve_benchmark("openimages_rare", rare)  # --data-root may also be the benchmark's own folder
    assert bench.images == [rare / "imgs/test/00a1b2c3d4e5f607.jpg"] and bench.targets.tolist() == [[0, 1]]
    assert bench.released_descriptions == released
    with pytest.raises(MissingDatasetError, match="openimages_common_214"):
        resolve_benchmark("openimages_common", tmp_path)
