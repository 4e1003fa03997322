# RAM++'s tag description supervision adapted to TagAlign: the tag classifier's text is each tag's LLM-description
# ensemble instead of "a photo of a {tag}." (compare with configs/tagalign_cc12m.py). Build the embeddings with
#   tools/parse_tags.py describe data/tags --model Qwen/Qwen2.5-7B-Instruct
#   tools/parse_tags.py embed data/tags --text both
# For RAM++'s automatic re-weighting of the descriptions per image: --cfg-options model.tag_text=reweighted
_base_ = ["../tagalign_cc12m.py"]
model = dict(tag_text="descriptions")
work_dir = "work_dirs/ablations/tag_descriptions"
