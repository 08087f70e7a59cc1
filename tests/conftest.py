import os
import sys
from pathlib import Path

# tests/helpers is importable as `tests.helpers` from the repository root
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
