"""The tasks, as compositions of graph operations through the family contract only:

caption.py     vision -> the captioner's decoder
retrieval.py   embed (ITC embeddings), score (ITC cosine / ITM probability), rank (ITC
               shortlist, ITM re-rank, possibly by another model)
vqa.py         generate, rank given answers, or classify over an answer list
capfilt.py     BLIP's caption-and-filter, possibly captioner and filter from two models
models.py      what a task is handed: a model's name, runner and capabilities; the checks
defaults.py    the one source of each task's generation defaults
"""
