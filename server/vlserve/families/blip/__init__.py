"""BLIP (Li et al. 2022): a ViT, and one BERT-style text transformer used three ways:
text encoder (ITC), image-grounded encoder (ITM, VQA questions), image-grounded decoder
(captions, answers). Everything that knows BLIP lives here; the rest of vlserve sees it
through engine/family.py.

family.py     what the registry calls: claims folders, the [blip] model.toml table, loading
engine.py     BlipEngine: the graph operations behind the contract
decoder.py    the text decoder as the shared decode loop drives it
config.py vision.py text.py cross.py model.py   the modules (named like the checkpoints' keys)
loader.py saver.py    HF layouts and original .pth in, HF layout out
tokenizer.py  BERT WordPiece with [DEC] / [ENC]
merge.py      one folder from several checkpoints (`vlserve merge`)
onnx/         ONNX Runtime for the encoder graphs
"""
