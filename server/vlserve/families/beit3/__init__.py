"""BEiT-3 (Wang et al. 2022, "Image as a Foreign Language"): one Multiway transformer whose
modes serve retrieval, VQA and captioning: torchscale 0.3's BEiT3 with unilm's task heads,
as unilm's fine-tuned checkpoints hold them. Everything that knows BEiT-3 lives here.

family.py     what the registry calls: claims folders whose weights are beit3.*, the [beit3] table
engine.py     Beit3Engine: the graph operations behind the contract
decoder.py    the captioner (masked-LM decoding) as the shared decode loop drives it
config.py     the architecture, read from the weights
multiway.py model.py   the modules, with torchscale's and unilm's parameter names
loader.py     unilm's checkpoints, beit3.spm and answer2label.txt; saving in that layout
tokenizer.py  XLM-R sentencepiece ids as unilm's XLMRobertaTokenizer gives them
"""
