"""CoCa (Yu et al. 2022, "Contrastive Captioners"), as open_clip builds and saves it: a ViT
with an attentional pooler (one token for contrast, the rest for captioning), a causal text
tower whose appended cls token gives the text embedding, and multimodal decoder layers
that cross-attend the image tokens. Everything that knows CoCa lives here.

family.py     what the registry calls: claims open_clip CoCa folders, the [coca] table, loading
engine.py     CocaEngine: the graph operations behind the contract
decoder.py    the caption decoder as the shared decode loop drives it (with a KV cache)
config.py blocks.py vision.py text.py   the modules, with open_clip's parameter names
loader.py     open_clip_config.json + weights, or a bare checkpoint named in model.toml; saving
tokenizer.py  CLIP's BPE (the merges file ships beside it)
"""
